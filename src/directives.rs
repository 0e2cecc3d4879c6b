//! The directives (`dwepc_vsphere`, `dwepc_prometheus`, `dwepc`,
//! `dwepc_node`) and the
//! module's configuration callbacks. Parsing and checks are `dwepc_core`'s
//! (`conf`); this file reads the words, files and block context from nginx
//! and stores the results in the phase types of `state`.

use core::ffi::{c_char, c_void};
use core::ptr;

use dwepc_core::collector::{EndpointSpec, SourceConfig};
use dwepc_core::conf::{self, ConfError, EndpointRef, NamedEndpoint, SourceConf, VmRef};
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, NGX_HTTP_UPSTREAM_BACKUP, NGX_HTTP_UPSTREAM_CREATE,
    NGX_HTTP_UPSTREAM_DOWN, NGX_HTTP_UPSTREAM_FAIL_TIMEOUT, NGX_HTTP_UPSTREAM_MAX_CONNS,
    NGX_HTTP_UPSTREAM_MAX_FAILS, NGX_HTTP_UPSTREAM_WEIGHT, NGX_LOG_EMERG, NGX_LOG_WARN,
};

use crate::module::{main_conf_mut, srv_conf, upstream_conf};
use crate::state::{Endpoint, MainState, NodeDirective, Origin, Resolved, SrvConf, UpstreamState};
use crate::util::{catch_panic, conf_error, conf_location, directive_args, log, ngx_str};

/// NGX_HTTP_UPSTREAM_MODIFY (servers changed at run time, nginx >= 1.27.3).
#[cfg(dwepc_peer_refs)]
const UPSTREAM_MODIFY: u32 = ngx::ffi::NGX_HTTP_UPSTREAM_MODIFY;
#[cfg(not(dwepc_peer_refs))]
const UPSTREAM_MODIFY: u32 = 0;

/// `create_main_conf`.
pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    catch_panic("create_main_conf", ptr::null_mut(), || {
        // SAFETY: cf is the live configuration; its pool frees the state
        // (and runs its destructor) with the cycle.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(MainState::default()) as *mut c_void
    })
}

/// `create_srv_conf` (called for every server and upstream block).
pub unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    catch_panic("create_srv_conf", ptr::null_mut(), || {
        // SAFETY: as create_main_conf.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(SrvConf::default()) as *mut c_void
    })
}

/// `init_main_conf`: resolves endpoints, checks timing, and adds the lease zone. Runs
/// after the upstream module's init_main_conf (this module is loaded after
/// the built-in ones), so every upstream's servers are known.
pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    catch_panic("init_main_conf", NGX_CONF_ERROR, || {
        // SAFETY: conf is our MainState, cf the live configuration.
        let (main, cf) = unsafe { (&*(conf as *const MainState), &mut *cf) };
        match resolve(main) {
            Ok(warnings) => {
                for w in warnings {
                    // SAFETY: cf->log is the configuration's log.
                    unsafe { log(NGX_LOG_WARN, cf.log, &w) };
                }
            }
            Err(msg) => {
                // SAFETY: cf->log is the configuration's log.
                unsafe { log(NGX_LOG_EMERG, cf.log, &msg.to_string()) };
                return NGX_CONF_ERROR;
            }
        }
        if main.upstreams().any(|u| u.endpoint().is_some()) {
            // SAFETY: cf is the live configuration.
            let zone = unsafe { crate::zone::add_lease(cf) };
            if zone.is_null() || !main.set_lease_zone(zone) {
                return NGX_CONF_ERROR;
            }
        }
        NGX_CONF_OK
    })
}

/// Phase 3: each upstream's endpoint and `ttl`; returns the warnings to
/// log (with where each upstream was written).
fn resolve(main: &MainState) -> Result<Vec<String>, ConfError> {
    if let Some(u) = main.upstreams().find(|u| !u.parsed.enabled) {
        let at = u
            .parsed
            .nodes
            .first()
            .map(|n| n.origin.at())
            .unwrap_or_default();
        return Err(ConfError::NodeWithoutDwepc {
            upstream: u.parsed.name.clone(),
            at,
        });
    }
    let endpoints: Vec<(&SourceConf, String)> = main
        .endpoints
        .iter()
        .map(|e| (&e.conf, e.origin.at()))
        .collect();
    let refs: Vec<(&EndpointRef, String)> = main
        .upstreams()
        .map(|u| (&u.parsed.conf.vsphere, u.parsed.origin.at()))
        .collect();
    let endpoints: Vec<_> = endpoints.iter().map(|(e, at)| (*e, at.as_str())).collect();
    let refs: Vec<_> = refs.iter().map(|(r, at)| (*r, at.as_str())).collect();
    let chosen = conf::resolve_endpoints(&endpoints, &refs)?;
    let longest_timeout = conf::longest_timeout(main.endpoints.iter().map(|e| e.conf.timeout_ms()));
    let mut warnings = Vec::new();
    for (u, endpoint) in main.upstreams().zip(chosen) {
        let at = u.parsed.origin.at();
        let mut ttl_ms = u.parsed.conf.ttl_ms;
        if let Some(e) = endpoint.and_then(|k| main.endpoints.get(k)) {
            let (ttl, w) =
                conf::check_timing(&u.parsed.name, &u.parsed.conf, &e.conf, longest_timeout)
                    .map_err(|m| m.at(&at))?;
            ttl_ms = ttl;
            warnings.extend(w.into_iter().map(|w| format!("dwepc: {w} in {at}")));
            if let SourceConf::Prometheus(p) = &e.conf {
                check_guest_ip_label(u, p).map_err(|m| m.at(&at))?;
            }
        }
        u.resolve(Resolved { endpoint, ttl_ms });
    }
    Ok(warnings)
}

/// An upstream on a Prometheus endpoint whose metrics carry no guest IP
/// cannot find a server by its address: each server needs its VM's name.
fn check_guest_ip_label(u: &UpstreamState, p: &conf::PrometheusConf) -> Result<(), ConfError> {
    if p.profile.ip_label.is_some() {
        return Ok(());
    }
    let by_ip = u.peers().iter().find(|m| {
        m.node
            .and_then(|k| u.parsed.nodes.get(k))
            .is_none_or(|n| n.conf.vm == VmRef::GuestIp)
    });
    match by_ip {
        None => Ok(()),
        Some(m) => Err(ConfError::NoGuestIpLabel {
            server: m.server.clone(),
            upstream: u.parsed.name.clone(),
            endpoint: p.name.clone(),
            profile: p.profile.base,
        }),
    }
}

/// The frame every directive handler shares: panics contained (`name`),
/// the words parsed by `parse`, then `apply`; an error from either is
/// logged with the file and line and fails the configuration.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn directive<T>(
    name: &'static str,
    cf: *mut ngx_conf_t,
    parse: impl FnOnce(&[&str]) -> Result<T, ConfError>,
    apply: impl FnOnce(&mut ngx_conf_t, T, Origin) -> Result<(), ConfError>,
) -> *mut c_char {
    catch_panic(name, NGX_CONF_ERROR, || {
        // SAFETY: forwarded from the caller.
        let args = unsafe { directive_args(cf) };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // SAFETY: forwarded from the caller.
        let (file, line) = unsafe { conf_location(cf) };
        // SAFETY: cf is the live parser state, used by one handler at a time.
        let result =
            parse(&argv).and_then(|v| apply(unsafe { &mut *cf }, v, Origin { file, line }));
        match result {
            Ok(()) => NGX_CONF_OK,
            Err(e) => {
                // SAFETY: forwarded from the caller.
                unsafe { conf_error(cf, &e.to_string()) };
                NGX_CONF_ERROR
            }
        }
    })
}

/// `dwepc_vsphere NAME url=... user=... password_file=... [...]`.
pub unsafe extern "C" fn cmd_vsphere(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf is the live configuration.
    unsafe {
        directive("cmd_vsphere", cf, conf::parse_endpoint, |cf, e, origin| {
            let password = read_file(
                cf,
                &e.password_file,
                "password_file",
                conf::MAX_PASSWORD_FILE,
            )?;
            let ca_pem = read_optional(cf, &e.ca_file, "ca_file", conf::MAX_CA_FILE)?;
            let client = e.client_config(&password, ca_pem)?;
            for w in e.warnings() {
                ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "dwepc: {}", w);
            }
            let spec = EndpointSpec {
                name: e.name.clone(),
                source: SourceConfig::Vsphere(client),
            };
            add_endpoint(cf, SourceConf::Vsphere(e), spec, origin)
        })
    }
}

/// `dwepc_prometheus NAME url=... [metrics=...] [...]`.
pub unsafe extern "C" fn cmd_prometheus(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf is the live configuration.
    unsafe {
        directive(
            "cmd_prometheus",
            cf,
            conf::parse_prometheus,
            |cf, e, origin| {
                let token = read_optional(
                    cf,
                    &e.bearer_token_file,
                    "bearer_token_file",
                    conf::MAX_PASSWORD_FILE,
                )?;
                let ca_pem = read_optional(cf, &e.ca_file, "ca_file", conf::MAX_CA_FILE)?;
                let client = e.client_config(token.as_deref(), ca_pem)?;
                for w in e.warnings() {
                    ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "dwepc: {}", w);
                }
                let spec = EndpointSpec {
                    name: e.name.clone(),
                    source: SourceConfig::Prometheus(client),
                };
                add_endpoint(cf, SourceConf::Prometheus(e), spec, origin)
            },
        )
    }
}

/// Adds an endpoint of either kind (names are shared by both).
fn add_endpoint(
    cf: &mut ngx_conf_t,
    conf: SourceConf,
    spec: EndpointSpec,
    origin: Origin,
) -> Result<(), ConfError> {
    let main = main_conf_mut(cf).ok_or(ConfError::NoMainConf)?;
    if main.endpoints.iter().any(|x| x.conf.name() == conf.name()) {
        return Err(ConfError::DuplicateEndpoint(conf.name().to_string()));
    }
    main.endpoints.push(Endpoint { conf, origin, spec });
    Ok(())
}

/// [`read_file`] of a file the configuration may name.
fn read_optional(
    cf: &ngx_conf_t,
    name: &Option<String>,
    what: &'static str,
    max: usize,
) -> Result<Option<Vec<u8>>, ConfError> {
    name.as_deref()
        .map(|f| read_file(cf, f, what, max))
        .transpose()
}

/// Reads a file named in the configuration (relative names are relative to
/// the configuration prefix, as nginx does for certificates): a regular
/// file of at most `max` bytes ([`conf::read_config_file`]).
fn read_file(
    cf: &ngx_conf_t,
    name: &str,
    what: &'static str,
    max: usize,
) -> Result<Vec<u8>, ConfError> {
    let path = if name.starts_with('/') {
        std::path::PathBuf::from(name)
    } else {
        // SAFETY: cf->cycle is the cycle being configured.
        let prefix = unsafe { ngx_str(&(*cf.cycle).conf_prefix) };
        std::path::Path::new(&prefix).join(name)
    };
    conf::read_config_file(&path, what, max)
}

/// The dwepc state of the upstream block being parsed, created on first
/// use and listed in the main state.
fn upstream_state(cf: &mut ngx_conf_t) -> Result<&mut UpstreamState, ConfError> {
    const NO_BLOCK: ConfError = ConfError::NotInUpstream;
    // SAFETY: the directives are only allowed inside upstream{}.
    let mut ups = unsafe { srv_conf(cf) }.ok_or(NO_BLOCK)?.ups;
    if ups.is_null() {
        // SAFETY: inside upstream{} (the directives are allowed nowhere
        // else) the upstream module's srv conf is the block's.
        let name = ngx_str(&unsafe { upstream_conf(cf) }.ok_or(NO_BLOCK)?.host);
        // SAFETY: the configuration pool frees the state with the cycle.
        let pool = unsafe { Pool::from_ngx_pool(cf.pool) };
        ups = pool.allocate(UpstreamState::new(name));
        if ups.is_null() {
            return Err(ConfError::OutOfMemory);
        }
        // SAFETY: inside upstream{}, our srv conf slot is the SrvConf that
        // create_srv_conf made for this block.
        unsafe { srv_conf(cf) }.ok_or(NO_BLOCK)?.ups = ups;
        main_conf_mut(cf)
            .ok_or(ConfError::NoMainConf)?
            .upstreams
            .push(ups);
    }
    // SAFETY: the state lives in the configuration pool for the whole
    // cycle; parsing is single-threaded and the reference is used within
    // this directive's handler only.
    Ok(unsafe { &mut *ups })
}

/// `dwepc [params]` inside `upstream {}`.
pub unsafe extern "C" fn cmd_dwepc(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf is the live configuration.
    unsafe {
        directive("cmd_dwepc", cf, conf::parse_upstream, |cf, args, origin| {
            if upstream_state(cf)?.parsed.enabled {
                return Err(ConfError::DuplicateDirective("dwepc"));
            }
            let uscf = upstream_conf(cf).ok_or(ConfError::NotInUpstream)?;
            let redefined = uscf.peer.init_upstream.is_some();
            uscf.peer.init_upstream = Some(crate::balancer::init_upstream);
            uscf.flags = (NGX_HTTP_UPSTREAM_CREATE
                | UPSTREAM_MODIFY
                | NGX_HTTP_UPSTREAM_WEIGHT
                | NGX_HTTP_UPSTREAM_MAX_CONNS
                | NGX_HTTP_UPSTREAM_MAX_FAILS
                | NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                | NGX_HTTP_UPSTREAM_DOWN
                | NGX_HTTP_UPSTREAM_BACKUP) as _;
            if redefined {
                ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "load balancing method redefined");
            }
            let ups = upstream_state(cf)?;
            ups.parsed.comparison = args.comparison();
            ups.parsed.conf = args;
            ups.parsed.enabled = true;
            ups.parsed.origin = origin;
            Ok(())
        })
    }
}

/// `dwepc_node ADDRESS [vm=NAME] [cpu=..] ...` inside `upstream {}`.
pub unsafe extern "C" fn cmd_node(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf is the live configuration.
    unsafe {
        directive("cmd_node", cf, conf::parse_node, |cf, node, origin| {
            let ups = upstream_state(cf)?;
            if ups
                .parsed
                .nodes
                .iter()
                .any(|n| n.conf.address == node.address)
            {
                return Err(ConfError::DuplicateNode(node.address));
            }
            ups.parsed.nodes.push(NodeDirective { conf: node, origin });
            Ok(())
        })
    }
}
