//! `dwepc_status`: a location handler serving the balancer's state as JSON.

use core::ffi::{c_char, c_void};
use core::ptr;

use dwepc_core::slots::SlotKind;
use dwepc_core::status::{render, PeerStatus, UpstreamStatus};
use ngx::ffi::{
    ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_create_temp_buf, ngx_http_core_loc_conf_t,
    ngx_http_discard_request_body, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_str_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleConfExt, NgxHttpCoreModule};

use crate::module::main_conf;
use crate::state::MainState;
use crate::util::{cached_now_ms, guard};

/// `dwepc_status;` in a location.
pub unsafe extern "C" fn cmd_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard("cmd_status", NGX_CONF_ERROR, || {
        // SAFETY: in a location block the core module's loc conf is an
        // ngx_http_core_loc_conf_t in the configuration pool.
        let clcf = unsafe {
            (*cf).http_location_conf_unchecked::<ngx_http_core_loc_conf_t>(
                <NgxHttpCoreModule as ngx::http::HttpModule>::module(),
            )
        };
        match clcf {
            Some(mut clcf) => {
                // SAFETY: as above; parsing is single-threaded.
                unsafe { clcf.as_mut().handler = Some(handler) };
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// Builds the status of every dwepc upstream.
pub fn collect(main: &MainState) -> Vec<UpstreamStatus> {
    let now = cached_now_ms();
    main.upstreams()
        .map(|ups| {
            let shared = crate::zone::of(ups);
            let (window, sample_end) = shared.map(|s| s.window()).unwrap_or((0, 0));
            let usable = shared.map(|s| s.usable(now)).unwrap_or(false);
            let reason = match shared {
                _ if ups.endpoint().is_none() => "no_endpoint",
                Some(s) => s.reason(now).name(),
                None => "no_zone",
            };
            UpstreamStatus {
                name: ups.parsed.name.clone(),
                mode: ups.parsed.conf.mode.name().into(),
                balancing: if usable { "dwepc" } else { "round_robin" }.into(),
                reason: reason.into(),
                vsphere: ups
                    .endpoint()
                    .and_then(|i| main.endpoints.get(i))
                    .map(|e| e.conf.name.clone()),
                window,
                window_size: ups.parsed.conf.window as u64,
                sample_age_ms: (sample_end > 0).then(|| now.saturating_sub(sample_end)),
                w: shared.and_then(|s| s.w()),
                cost: shared
                    .map(|s| s.cost())
                    .filter(|c| c.iter().any(|x| x.is_finite())),
                rate: shared.map(|s| s.rate()).unwrap_or(f64::NAN),
                guard_rejections: shared.map(|s| s.guard_rejections()).unwrap_or(0),
                peers: ups
                    .peers()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        // a spare slot shows the address that holds it
                        let name = match p.kind {
                            SlotKind::Fixed { .. } => p.name.clone(),
                            SlotKind::Spare { .. } => {
                                let s = shared?;
                                if s.slot_ident(i) == 0 {
                                    return None;
                                }
                                s.slot_addr(i)
                                    .map_or_else(|| p.name.clone(), |a| a.to_string())
                            }
                        };
                        let info = shared.map(|s| s.peer_info(i));
                        Some(PeerStatus {
                            name,
                            server: p.server.clone(),
                            backup: p.backup,
                            vm: p.node.and_then(|k| match &ups.parsed.nodes[k].conf.vm {
                                dwepc_core::conf::VmRef::Name(n) => Some(n.clone()),
                                dwepc_core::conf::VmRef::GuestIp => None,
                            }),
                            capacity: info.map(|x| x.capacity).unwrap_or([f64::NAN; 4]),
                            q: info.map(|x| x.q).unwrap_or([f64::NAN; 4]),
                            allocation: if usable {
                                info.map(|x| x.allocation).unwrap_or(f64::NAN)
                            } else {
                                f64::NAN
                            },
                            v: info.map(|x| x.v).unwrap_or(0),
                            l: if usable {
                                info.map(|x| x.l).unwrap_or(f64::NAN)
                            } else {
                                f64::NAN
                            },
                            requests: info.map(|x| x.total).unwrap_or(0),
                            in_flight: info.map(|x| x.in_flight).unwrap_or(0),
                            failed: info.map(|x| x.failed).unwrap_or(0),
                            cpu_ready_pct: info.map(|x| x.cpu_ready_pct).unwrap_or(f64::NAN),
                            share: match info {
                                Some(x) if usable => x.share,
                                _ => f64::NAN,
                            },
                            target_share: info.map(|x| x.target_share).unwrap_or(f64::NAN),
                            limit: match info {
                                Some(x) if usable => x.limit,
                                _ => 0,
                            },
                            background: info.map(|x| x.background).unwrap_or([f64::NAN; 4]),
                            effective_cpu: info.map(|x| x.effective_cpu).unwrap_or(f64::NAN),
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(
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
        let body = match main_conf(&*r) {
            Some(main) => render(&collect(main)),
            None => render(&[]),
        };

        (*r).headers_out.status = 200;
        (*r).headers_out.content_length_n = body.len() as _;
        static CT: &[u8] = b"application/json";
        (*r).headers_out.content_type = ngx_str_t {
            len: CT.len(),
            data: CT.as_ptr() as *mut u8,
        };
        (*r).headers_out.content_type_len = CT.len();
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
