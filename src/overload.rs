//! The overload guard's answer. When every server of a dwepc upstream is
//! at its in-flight limit, the pick answers `NGX_BUSY` and nginx finalizes
//! the request with its own 502 ("no live upstreams"), as it does when
//! every server is at `max_conns`; a balancer cannot choose that status.
//! This header filter can: it sees nginx's 502 for a request whose last
//! pick was the guard's, and has nginx answer the upstream's
//! `overload_status=` instead (503 by default) through
//! `ngx_http_filter_finalize_request`, as nginx's own not_modified and
//! image filters replace a response, so `error_page` for that status
//! applies; the answer carries `Retry-After`. nginx closes the client
//! connection after a response a filter replaced, and the answer says so
//! (`Connection: close`; a guard's answer is a time to shed load, not to
//! keep connections). Every other response costs one context lookup.

use ngx::ffi::{
    ngx_http_filter_finalize_request, ngx_http_output_header_filter_pt, ngx_http_request_t,
    ngx_http_top_header_filter, ngx_int_t, ngx_module_t, NGX_ERROR, NGX_HTTP_BAD_GATEWAY,
};
use ngx::http::{HttpModule, Request};

use crate::balancer::PeerData;
use crate::module::Dwepc;

/// The next header filter in nginx's chain.
static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

/// `postconfiguration`: puts the filter at the top of the chain.
///
/// # Safety
/// Called once per configuration cycle, single-threaded, as nginx calls
/// `postconfiguration`.
pub unsafe fn install() {
    // SAFETY: nginx's header filter chain is only written while the
    // configuration is read (single-threaded); this is that time.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
    }
}

/// What the filter does with a response.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Not the guard's answer: pass it on.
    Pass,
    /// nginx's 502 for the guard: answer this status instead.
    Replace(u16),
    /// The guard's 502 as the page of an `error_page 502` redirect: the
    /// page stays, its status becomes this, with `Retry-After` (s).
    Restatus(u16, u32),
    /// The guard's answer in its final status: add `Retry-After` (s).
    RetryAfter(u32),
}

/// The action for a response of `status` (nginx's own error response
/// when `err_status` is the same) to a request whose last pick was the
/// guard's (`guarded`; `redirected`: the decisions were found after an
/// internal redirect, an `error_page`), with the upstream's
/// `overload_status` and `retry_after` (s).
fn action(
    guarded: bool,
    redirected: bool,
    status: u16,
    err_status: u16,
    answer: (u16, u32),
) -> Action {
    let (overload_status, retry_after) = answer;
    if !guarded || status != err_status {
        return Action::Pass;
    }
    if status == NGX_HTTP_BAD_GATEWAY as u16 && overload_status != status {
        return match redirected {
            false => Action::Replace(overload_status),
            true => Action::Restatus(overload_status, retry_after),
        };
    }
    if status == overload_status && retry_after > 0 {
        return Action::RetryAfter(retry_after);
    }
    Action::Pass
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    crate::util::catch_panic("header_filter", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes a live request to each header filter.
        unsafe { header_filter_inner(r) }
    })
}

/// # Safety
/// `r` is a live request in the header filter chain.
unsafe fn header_filter_inner(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live (the caller's contract).
    let req = unsafe { Request::from_ngx_http_request(r) };
    // a subrequest's answer is its parent's business (replacing it would
    // end the whole request, as nginx's not_modified filter avoids too)
    let act = match PeerData::of_request(req).filter(|_| req.is_main()) {
        None => Action::Pass,
        // the common case: not the guard's answer, nothing more to read
        Some((dp, _)) if !dp.decisions().guarded() => Action::Pass,
        Some((dp, redirected)) => {
            let answer = dp.overload_answer().unwrap_or((0, 0));
            // SAFETY: r is live; reading two of its fields.
            let (status, err) = unsafe { ((*r).headers_out.status, (*r).err_status) };
            action(
                dp.decisions().guarded(),
                redirected,
                u16::try_from(status).unwrap_or(0),
                u16::try_from(err).unwrap_or(0),
                answer,
            )
        }
    };
    match act {
        Action::Pass => {}
        Action::Restatus(status, retry_after) => {
            // SAFETY: r is live; the status words nginx's header filter
            // and the access log ($status) read.
            unsafe {
                (*r).headers_out.status = status as _;
                (*r).err_status = status as _;
            }
            if retry_after > 0
                && req
                    .add_header_out("Retry-After", &retry_after.to_string())
                    .is_none()
            {
                return NGX_ERROR as ngx_int_t;
            }
        }
        Action::Replace(status) => {
            let module = Dwepc::module() as *const ngx_module_t as *mut ngx_module_t;
            // nginx closes the connection after a response a filter
            // replaced: say so in the answer ("Connection: close")
            // SAFETY: r is live; a bit of the request nginx's header
            // filter reads when it writes the answer.
            // an error_page of the location applies to the new status
            // (nginx marked the request while it looked for one for the
            // 502); not on an internal request, so it cannot recurse
            // SAFETY: r is live; bits of the request nginx reads when
            // it writes the answer and looks for an error_page.
            unsafe {
                (*r).set_keepalive(0);
                if (*r).internal() == 0 {
                    (*r).set_error_page(0);
                }
            }
            // SAFETY: r is live; nginx only reads the module's ctx_index
            // (to keep our context, the decisions); the response begins
            // again with `status`.
            return unsafe { ngx_http_filter_finalize_request(r, module, status as ngx_int_t) };
        }
        Action::RetryAfter(s) => {
            if req.add_header_out("Retry-After", &s.to_string()).is_none() {
                return NGX_ERROR as ngx_int_t;
            }
        }
    }
    // SAFETY: the next filter was set at install, before any request.
    match unsafe { NEXT_HEADER_FILTER } {
        // SAFETY: the next filter of nginx's chain, with the same request.
        Some(next) => unsafe { next(r) },
        None => NGX_ERROR as ngx_int_t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nginx_s_own_answer_to_a_guarded_request_changes() {
        let d = (503, 1);
        assert_eq!(action(true, false, 502, 502, d), Action::Replace(503));
        assert_eq!(action(true, false, 503, 503, d), Action::RetryAfter(1));
        // a backend's own 502, an unguarded request, no Retry-After
        assert_eq!(action(true, false, 502, 0, d), Action::Pass);
        assert_eq!(action(false, false, 502, 502, d), Action::Pass);
        assert_eq!(action(true, false, 503, 503, (503, 0)), Action::Pass);
        // 502 kept: only the header
        assert_eq!(
            action(true, false, 502, 502, (502, 5)),
            Action::RetryAfter(5)
        );
        assert_eq!(action(true, false, 502, 502, (502, 0)), Action::Pass);
        assert_eq!(
            action(true, false, 429, 429, (429, 2)),
            Action::RetryAfter(2)
        );
        // the page of an error_page 502 keeps its body, not its status
        assert_eq!(action(true, true, 502, 502, d), Action::Restatus(503, 1));
        assert_eq!(
            action(true, true, 502, 502, (502, 1)),
            Action::RetryAfter(1)
        );
    }
}
