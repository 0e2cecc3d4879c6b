//! `dwepc_status`: a location handler serving the balancer's state as JSON.

use core::ffi::{c_char, c_void};
use core::ptr;

use dwepc_core::status::{
    render, render_error, snapshot, EndpointMetrics, PeerMeta, UpstreamMeta, UpstreamStatus,
};
use ngx::ffi::{
    ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_create_temp_buf, ngx_http_arg,
    ngx_http_core_loc_conf_t, ngx_http_discard_request_body, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_str_t, NGX_ERROR, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleConfExt, NgxHttpCoreModule};

use dwepc_core::conf::NamedEndpoint;

use crate::module::main_conf;
use crate::state::MainState;
use crate::util::{cached_now_ms, catch_panic};

/// `dwepc_status;` in a location.
pub unsafe extern "C" fn cmd_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    catch_panic("cmd_status", NGX_CONF_ERROR, || {
        // SAFETY: in a location block the core module's loc conf is an
        // ngx_http_core_loc_conf_t in the configuration pool.
        let clcf = unsafe {
            (*cf).http_location_conf_unchecked::<ngx_http_core_loc_conf_t>(
                <NgxHttpCoreModule as ngx::http::HttpModule>::module(),
            )
        };
        match clcf {
            Some(mut clcf) => {
                // SAFETY: clcf is the location's core conf (above), in the
                // configuration pool; parsing is single-threaded, so no
                // other reference to it is alive.
                unsafe { clcf.as_mut().handler = Some(handler) };
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// The status of every dwepc upstream, or of the one named `only`
/// (`dwepc_core::status::snapshot` over each upstream's configuration and
/// zone).
fn collect(main: &MainState, only: Option<&str>) -> Vec<UpstreamStatus> {
    let now = cached_now_ms();
    main.upstreams()
        .filter(|ups| only.is_none_or(|n| n == ups.parsed.name))
        .map(|ups| {
            let meta = UpstreamMeta {
                name: &ups.parsed.name,
                conf: &ups.parsed.conf,
                vsphere: ups
                    .endpoint()
                    .and_then(|i| main.endpoints.get(i))
                    .map(|e| e.conf.name()),
                peers: ups
                    .peers()
                    .iter()
                    .map(|p| PeerMeta {
                        name: &p.name,
                        server: &p.server,
                        backup: p.backup,
                        spare: p.is_spare(),
                    })
                    .collect(),
            };
            snapshot(&meta, crate::zone::of(ups), now)
        })
        .collect()
}

/// The value of query argument `name` (nginx's own parsing, no unescaping).
///
/// # Safety
/// `r` is a live request.
unsafe fn query_arg(r: *mut ngx_http_request_t, name: &core::ffi::CStr) -> Option<String> {
    let mut value = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    // SAFETY: r is live (the caller's contract); ngx_http_arg only reads
    // the name and r->args, and sets value to point into r->args.
    let rc = unsafe {
        ngx_http_arg(
            r,
            name.as_ptr() as *mut u8,
            name.to_bytes().len(),
            &mut value,
        )
    };
    (rc == NGX_OK as ngx_int_t).then(|| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Every endpoint's record in the lease zone (none before the zone).
fn endpoints(main: &MainState) -> Vec<EndpointMetrics<'_>> {
    let lease = main.lease_zone().and_then(crate::zone::lease);
    main.endpoints
        .iter()
        .map(|e| EndpointMetrics {
            name: e.conf.name(),
            source: e.conf.kind().key(),
            url: e.spec.url(),
            stats: lease
                .and_then(|l| l.find_endpoint(e.spec.record_key()))
                .map(|r| r.stats(cached_now_ms()))
                .unwrap_or_default(),
        })
        .collect()
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    catch_panic(
        "status_handler",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: nginx passes a live request.
            unsafe { handler_inner(r) }
        },
    )
}

/// # Safety
/// `r` is a live request.
unsafe fn handler_inner(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is a live request; buffers come from its pool.
    unsafe {
        if (*r).method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        // ?upstream=NAME: that upstream alone (the page's cost follows
        // what is asked, not the size of the whole configuration);
        // ?format=prometheus: the text exposition format
        let only = query_arg(r, c"upstream");
        let prometheus = query_arg(r, c"format").as_deref() == Some("prometheus");
        let main = main_conf(&*r);
        let ups = match main {
            Some(main) => collect(main, only.as_deref()),
            None => Vec::new(),
        };
        let (status, body) = match &only {
            Some(name) if ups.is_empty() => {
                (404, render_error(&format!("no dwepc upstream \"{name}\"")))
            }
            _ if prometheus => (
                200,
                dwepc_core::status::prometheus::render(
                    crate::module::VERSION,
                    &ups,
                    &main.map(endpoints).unwrap_or_default(),
                ),
            ),
            _ => (
                200,
                render(
                    crate::module::VERSION,
                    &ups,
                    &main.map(endpoints).unwrap_or_default(),
                ),
            ),
        };

        (*r).headers_out.status = status;
        (*r).headers_out.content_length_n = body.len() as _;
        static JSON: &[u8] = b"application/json";
        static TEXT: &[u8] = b"text/plain; version=0.0.4; charset=utf-8";
        let ct: &'static [u8] = if prometheus && status == 200 {
            TEXT
        } else {
            JSON
        };
        (*r).headers_out.content_type = ngx_str_t {
            len: ct.len(),
            data: ct.as_ptr() as *mut u8,
        };
        (*r).headers_out.content_type_len = ct.len();
        (*r).headers_out.content_type_lowcase = ptr::null_mut();

        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        let b = ngx_create_temp_buf((*r).pool, body.len().max(1));
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf: b,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}
