//! Fuzzes the vSphere response parser and every decoder: no input may
//! panic, hang or exhaust memory.
#![no_main]

use dwepc_core::vsphere::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = xml::parse(data) {
        let _ = xml::fault(&doc);
        let _ = xml::service_content(&doc);
        let _ = xml::moref_return(&doc, "CreateContainerViewResponse");
        let _ = xml::perf_counters(&doc);
        let _ = xml::vms(&doc);
        let _ = xml::refresh_rate(&doc);
        let _ = xml::current_time(&doc);
    }
    let _ = xml::parse_perf(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = xml::parse_datetime_ms(s);
    }
});
