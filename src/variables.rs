//! The module's variables, for `log_format` and anything else that reads
//! variables: `$dwepc_decision` (what decided each pick of the request:
//! `counters`, `response_times`, `round_robin`, `guard`) and
//! `$dwepc_share` (the chosen server's share at each pick), one value per
//! try, comma-separated in the order of `$upstream_addr`, also after an
//! `error_page` redirect. A request that used no dwepc upstream has
//! neither (the log shows `-`).

use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_pnalloc, ngx_str_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::Request;
use ngx::ngx_string;

use crate::balancer::PeerData;
use dwepc_core::policy::decision::Decisions;

/// What a variable shows of a request's decisions.
type Show = fn(&Decisions) -> String;

/// Each variable: its name and what it shows.
const VARIABLES: [(ngx_str_t, Show); 2] = [
    (ngx_string!("dwepc_decision"), Decisions::decisions),
    (ngx_string!("dwepc_share"), Decisions::shares),
];

/// `preconfiguration`: adds the variables.
pub unsafe extern "C" fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    crate::util::catch_panic("add_variables", NGX_ERROR as ngx_int_t, || {
        for (i, (name, _)) in VARIABLES.iter().enumerate() {
            let mut name = *name;
            // SAFETY: cf is the live configuration nginx passes; the name
            // is a static string nginx copies into the cycle's pool.
            let v = unsafe {
                ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t)
            };
            // SAFETY: NULL or the variable nginx just added, in the
            // configuration pool.
            let Some(v) = (unsafe { v.as_mut() }) else {
                return NGX_ERROR as ngx_int_t;
            };
            v.get_handler = Some(get_variable);
            v.data = i;
        }
        NGX_OK as ngx_int_t
    })
}

/// A variable's value for request `r` (`data`: its index in
/// [`VARIABLES`]).
unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    crate::util::catch_panic("get_variable", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes a live request and the value to fill.
        let (req, v) = unsafe { (Request::from_ngx_http_request(r), &mut *v) };
        let text = PeerData::of_request(req)
            .map(|(dp, _)| dp.decisions())
            .filter(|d| !d.is_empty())
            .and_then(|d| VARIABLES.get(data).map(|(_, show)| show(d)));
        let Some(text) = text else {
            v.set_not_found(1);
            return NGX_OK as ngx_int_t;
        };
        // SAFETY: the request's pool is live; the copy lives as long as
        // the request, which is as long as nginx keeps the value.
        let buf = unsafe { ngx_pnalloc((*r).pool, text.len()) } as *mut u8;
        if buf.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: buf has text.len() bytes and does not overlap text.
        unsafe { ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
        v.data = buf;
        v.set_len(text.len() as _);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        NGX_OK as ngx_int_t
    })
}
