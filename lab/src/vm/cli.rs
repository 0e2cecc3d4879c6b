//! `dwepc-lab vms`: the emulated VMs as a process of their own.

use std::io;

use super::handle::start_on;
use super::spec::parse_specs;

/// `dwepc-lab vms --spec FILE [--control ADDR] [--ready FILE] [--real-cpu
/// MHZ]`: runs the VMs until `GET /quit`, SIGTERM or SIGINT (exit 0).
pub fn main(spec: &str, control: &str, ready: Option<&str>, real_cpu: Option<f64>) -> i32 {
    let specs = match std::fs::read_to_string(spec)
        .map_err(|e| format!("{spec}: {e}"))
        .and_then(|t| parse_specs(&t))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dwepc-lab vms: {e}");
            return 2;
        }
    };
    let h = match start_on(specs, control, real_cpu) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dwepc-lab vms: {e}");
            return 1;
        }
    };
    let line = h.ready_json().to_string();
    if let Some(ready) = ready {
        let tmp = format!("{ready}.tmp.{}", std::process::id());
        if let Err(e) =
            std::fs::write(&tmp, format!("{line}\n")).and_then(|()| std::fs::rename(&tmp, ready))
        {
            eprintln!("dwepc-lab vms: {ready}: {e}");
            let _ = std::fs::remove_file(&tmp);
            return 1;
        }
    }
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Err(e) = h.wait_signals() {
        eprintln!("dwepc-lab vms: signals: {e}");
        return 1;
    }
    0
}
