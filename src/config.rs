//! Configuration: the module's main and per-upstream state and the
//! directive handlers (`dwepc_vsphere`, `dwepc`, `dwepc_node`).
//!
//! Everything owned by Rust (strings, vectors) lives in boxes released by a
//! cleanup handler of the configuration pool, so a reload frees the old
//! cycle's state with the cycle.

use core::ffi::{c_char, c_void};
use core::ptr;

use dwepc_core::conf::{self, EndpointConf, EndpointRef, NodeConf, UpstreamConf};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_upstream_init_round_robin,
    ngx_http_upstream_module, ngx_http_upstream_srv_conf_t, ngx_pcalloc, ngx_pool_cleanup_add,
    ngx_pool_t, ngx_shm_zone_t, NGX_HTTP_UPSTREAM_BACKUP, NGX_HTTP_UPSTREAM_CREATE,
    NGX_HTTP_UPSTREAM_DOWN, NGX_HTTP_UPSTREAM_FAIL_TIMEOUT, NGX_HTTP_UPSTREAM_MAX_CONNS,
    NGX_HTTP_UPSTREAM_MAX_FAILS, NGX_HTTP_UPSTREAM_WEIGHT, NGX_LOG_WARN,
};

use crate::util::{conf_error, conf_location, directive_args, guard};

/// NGX_HTTP_UPSTREAM_MODIFY (servers changed at run time, nginx >= 1.27.3).
#[cfg(dwepc_peer_refs)]
const UPSTREAM_MODIFY: u32 = ngx::ffi::NGX_HTTP_UPSTREAM_MODIFY;
#[cfg(not(dwepc_peer_refs))]
const UPSTREAM_MODIFY: u32 = 0;

/// `NGX_CONF_ERROR`.
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;
/// `NGX_CONF_OK`.
pub const CONF_OK: *mut c_char = ptr::null_mut();

/// Where a directive was written.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl Origin {
    /// `file:line` for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A `dwepc_vsphere` endpoint.
pub struct Endpoint {
    pub conf: EndpointConf,
    pub origin: Origin,
    /// Read from `password_file` at configuration time (as the master's
    /// user); never logged or shown.
    pub password: String,
    /// Contents of `ca_file`.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("conf", &self.conf)
            .field("origin", &self.origin)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A `dwepc_node` line.
#[derive(Debug)]
pub struct NodeDirective {
    pub conf: NodeConf,
    pub origin: Origin,
}

/// What the module knows of one peer (primary or backup) after
/// `init_upstream`.
#[derive(Debug, Clone)]
pub struct PeerMeta {
    /// `ip:port` (the peer's name).
    pub name: String,
    /// The `server` directive's address as written.
    pub server: String,
    pub backup: bool,
    pub weight: f64,
    /// The peer's IP, for mapping to a VM by guest IP.
    pub ip: Option<std::net::IpAddr>,
    /// Index of the `dwepc_node` line that applies to it.
    pub node: Option<usize>,
}

/// Per-upstream state (one per `upstream {}` using `dwepc` or `dwepc_node`).
#[derive(Debug)]
pub struct UpstreamState {
    pub name: String,
    pub conf: UpstreamConf,
    /// `dwepc` was given (the balancer is in force).
    pub enabled: bool,
    pub origin: Origin,
    pub nodes: Vec<NodeDirective>,
    /// Filled by init_upstream.
    pub peers: Vec<PeerMeta>,
    pub n_primary: usize,
    pub zone: *mut ngx_shm_zone_t,
    /// Index into `MainState::endpoints`, resolved at init_main_conf.
    pub endpoint: Option<usize>,
    /// Shares mode: this worker's smooth-WRR current weights for breaking
    /// ties (per process, as nginx's least_conn keeps them per worker
    /// without a zone).
    pub tie_weights: Vec<std::cell::Cell<i64>>,
}

impl UpstreamState {
    /// The shared view of this upstream's zone, once the zone exists.
    pub fn shared(&self) -> Option<dwepc_core::shared::Shared<'_>> {
        // SAFETY: `zone` is NULL or the zone added for this upstream while
        // parsing the configuration this state belongs to: both live in
        // that cycle (its pool and its shared memory list).
        let zone = unsafe { self.zone.as_ref() }?;
        crate::zone::view(zone, self.peers.len())
    }
}

/// Module main configuration (http level).
#[derive(Debug)]
pub struct MainState {
    pub endpoints: Vec<Endpoint>,
    pub upstreams: Vec<*mut UpstreamState>,
    /// The poller lease (only when some upstream has an endpoint).
    pub lease_zone: *mut ngx_shm_zone_t,
}

impl Default for MainState {
    fn default() -> Self {
        MainState {
            endpoints: Vec::new(),
            upstreams: Vec::new(),
            lease_zone: ptr::null_mut(),
        }
    }
}

impl MainState {
    /// Upstreams in configuration order.
    pub fn upstreams(&self) -> impl Iterator<Item = &UpstreamState> {
        // SAFETY: the pointers are boxes owned by the same configuration
        // pool as self, freed only with it.
        self.upstreams.iter().map(|p| unsafe { &**p })
    }
}

/// Our `srv_conf` slot: a pointer to the upstream's state, set by the first
/// `dwepc`/`dwepc_node` directive in an upstream block.
#[repr(C)]
pub struct SrvConf {
    pub ups: *mut UpstreamState,
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) {
    guard("drop_box", (), || {
        if !data.is_null() {
            // SAFETY: data was produced by Box::into_raw::<T> in pool_box and
            // this cleanup runs once, when the pool is destroyed.
            drop(unsafe { Box::from_raw(data as *mut T) });
        }
    })
}

/// Moves `value` into a box freed with `pool`.
///
/// # Safety
/// `pool` must be a valid nginx pool.
pub unsafe fn pool_box<T>(pool: *mut ngx_pool_t, value: T) -> *mut T {
    // SAFETY: pool is valid per the caller; the cleanup owns the box.
    unsafe {
        let cln = ngx_pool_cleanup_add(pool, 0);
        if cln.is_null() {
            return ptr::null_mut();
        }
        let p = Box::into_raw(Box::new(value));
        (*cln).handler = Some(drop_box::<T>);
        (*cln).data = p as *mut c_void;
        p
    }
}

/// Our main conf from a configuration context.
///
/// # Safety
/// `cf` must be an http-level (or nested) configuration context.
pub unsafe fn main_state(cf: *mut ngx_conf_t) -> *mut MainState {
    // SAFETY: inside http{} cf->ctx is an ngx_http_conf_ctx_t whose
    // main_conf array has a slot for every http module.
    unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        *(*ctx).main_conf.add(crate::ngx_http_dwepc_module.ctx_index) as *mut MainState
    }
}

/// The upstream block's srv conf of the upstream module.
///
/// # Safety
/// `cf` must be inside an `upstream {}` block.
unsafe fn upstream_conf(cf: *mut ngx_conf_t) -> *mut ngx_http_upstream_srv_conf_t {
    // SAFETY: inside upstream{} cf->ctx is the block's http conf ctx.
    unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        *(*ctx).srv_conf.add(ngx_http_upstream_module.ctx_index)
            as *mut ngx_http_upstream_srv_conf_t
    }
}

/// The upstream state of the block being parsed, created on first use.
unsafe fn upstream_state(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut UpstreamState {
    // SAFETY: conf is our SrvConf for this upstream block (NGX_HTTP_SRV_CONF_OFFSET).
    unsafe {
        let sc = conf as *mut SrvConf;
        if (*sc).ups.is_null() {
            let uscf = upstream_conf(cf);
            let ups = pool_box(
                (*cf).pool,
                UpstreamState {
                    name: crate::util::ngx_str(&(*uscf).host),
                    conf: UpstreamConf::default(),
                    enabled: false,
                    origin: Origin::default(),
                    nodes: Vec::new(),
                    peers: Vec::new(),
                    n_primary: 0,
                    zone: ptr::null_mut(),
                    endpoint: None,
                    tie_weights: Vec::new(),
                },
            );
            if ups.is_null() {
                return ptr::null_mut();
            }
            (*sc).ups = ups;
            let main = main_state(cf);
            (*main).upstreams.push(ups);
        }
        (*sc).ups
    }
}

/// `create_main_conf`.
pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: cf is the live configuration.
    guard("create_main_conf", ptr::null_mut(), || unsafe {
        pool_box((*cf).pool, MainState::default()) as *mut c_void
    })
}

/// `create_srv_conf` (called for every server and upstream block).
pub unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: zeroed SrvConf (null pointer) from the configuration pool.
    guard("create_srv_conf", ptr::null_mut(), || unsafe {
        ngx_pcalloc((*cf).pool, core::mem::size_of::<SrvConf>())
    })
}

/// `init_main_conf`: resolves endpoints and checks cross-directive rules.
/// Runs after the upstream module's init_main_conf (this module is loaded
/// after the built-in ones), so every upstream's peers are known.
pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    guard("init_main_conf", CONF_ERROR, || {
        // SAFETY: conf is our MainState.
        let main = unsafe { &mut *(conf as *mut MainState) };
        match resolve(main) {
            Ok(()) if main.upstreams().any(|u| u.endpoint.is_some()) => {
                // SAFETY: cf is the live configuration.
                main.lease_zone = unsafe { crate::zone::add_lease(cf) };
                if main.lease_zone.is_null() {
                    return CONF_ERROR;
                }
                CONF_OK
            }
            Ok(()) => CONF_OK,
            Err(msg) => {
                // SAFETY: cf is the live configuration.
                unsafe { crate::util::log(ngx::ffi::NGX_LOG_EMERG, (*cf).log, &msg) };
                CONF_ERROR
            }
        }
    })
}

fn resolve(main: &mut MainState) -> Result<(), String> {
    let defaults: Vec<usize> = main
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.conf.default)
        .map(|(i, _)| i)
        .collect();
    if defaults.len() > 1 {
        let e = &main.endpoints[defaults[1]];
        return Err(format!(
            "more than one default \"dwepc_vsphere\" endpoint in {}",
            e.origin.at()
        ));
    }
    let default = defaults
        .first()
        .copied()
        .or((main.endpoints.len() == 1).then_some(0));
    for &p in &main.upstreams {
        // SAFETY: see MainState::upstreams.
        let ups = unsafe { &mut *p };
        if !ups.enabled {
            let node = &ups.nodes[0];
            return Err(format!(
                "\"dwepc_node\" in upstream \"{}\" without \"dwepc\" in {}",
                ups.name,
                node.origin.at()
            ));
        }
        ups.endpoint = match &ups.conf.vsphere {
            EndpointRef::Off => None,
            EndpointRef::Default => default,
            EndpointRef::Named(name) => Some(
                main.endpoints
                    .iter()
                    .position(|e| &e.conf.name == name)
                    .ok_or_else(|| {
                        format!("unknown vSphere endpoint \"{name}\" in {}", ups.origin.at())
                    })?,
            ),
        };
    }
    Ok(())
}

/// The directive's words parsed by `parse`; a parse error is logged with
/// the file and line and gives `None`.
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn parsed<T>(
    cf: *mut ngx_conf_t,
    parse: impl FnOnce(&[&str]) -> Result<T, String>,
) -> Option<T> {
    // SAFETY: forwarded from the caller.
    let args = unsafe { directive_args(cf) };
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match parse(&argv) {
        Ok(v) => Some(v),
        Err(msg) => {
            // SAFETY: forwarded from the caller.
            unsafe { conf_error(cf, &msg) };
            None
        }
    }
}

/// `dwepc_vsphere NAME url=... user=... password_file=... [...]`.
pub unsafe extern "C" fn cmd_vsphere(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard("cmd_vsphere", CONF_ERROR, || {
        // SAFETY: cf is the live configuration, conf our MainState.
        unsafe {
            let Some(e) = parsed(cf, conf::parse_endpoint) else {
                return CONF_ERROR;
            };
            let main = &mut *(conf as *mut MainState);
            if main.endpoints.iter().any(|x| x.conf.name == e.name) {
                conf_error(cf, &format!("duplicate vSphere endpoint \"{}\"", e.name));
                return CONF_ERROR;
            }
            let password = match read_file(cf, &e.password_file, "password_file") {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let first = text.lines().next().unwrap_or("").to_string();
                    if first.is_empty() {
                        conf_error(
                            cf,
                            &format!("password file \"{}\" is empty", e.password_file),
                        );
                        return CONF_ERROR;
                    }
                    first
                }
                Err(msg) => {
                    conf_error(cf, &msg);
                    return CONF_ERROR;
                }
            };
            let ca_pem = match &e.ca_file {
                None => None,
                Some(f) => match read_file(cf, f, "ca_file") {
                    Ok(b) if b.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(b),
                    Ok(_) => {
                        conf_error(cf, &format!("ca_file \"{f}\" holds no PEM certificate"));
                        return CONF_ERROR;
                    }
                    Err(msg) => {
                        conf_error(cf, &msg);
                        return CONF_ERROR;
                    }
                },
            };
            let (file, line) = conf_location(cf);
            main.endpoints.push(Endpoint {
                conf: e,
                origin: Origin { file, line },
                password,
                ca_pem,
            });
            CONF_OK
        }
    })
}

/// Reads a file named in the configuration (relative names are relative to
/// the configuration prefix, as nginx does for certificates).
unsafe fn read_file(cf: *mut ngx_conf_t, name: &str, what: &str) -> Result<Vec<u8>, String> {
    let path = if name.starts_with('/') {
        std::path::PathBuf::from(name)
    } else {
        // SAFETY: cf->cycle is the cycle being configured.
        let prefix = unsafe { crate::util::ngx_str(&(*(*cf).cycle).conf_prefix) };
        std::path::Path::new(&prefix).join(name)
    };
    std::fs::read(&path).map_err(|e| format!("cannot read {what} \"{}\": {e}", path.display()))
}

/// `dwepc [params]` inside `upstream {}`.
pub unsafe extern "C" fn cmd_dwepc(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard("cmd_dwepc", CONF_ERROR, || {
        // SAFETY: cf is the live configuration inside upstream{}, conf our SrvConf.
        unsafe {
            let Some(upstream_conf_args) = parsed(cf, conf::parse_upstream) else {
                return CONF_ERROR;
            };
            let ups = upstream_state(cf, conf);
            if ups.is_null() {
                return CONF_ERROR;
            }
            if (*ups).enabled {
                conf_error(cf, "\"dwepc\" directive is duplicate");
                return CONF_ERROR;
            }
            let uscf = upstream_conf(cf);
            if (*uscf).peer.init_upstream.is_some() {
                ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "load balancing method redefined");
            }
            (*uscf).peer.init_upstream = Some(crate::balancer::init_upstream);
            (*uscf).flags = (NGX_HTTP_UPSTREAM_CREATE
                | UPSTREAM_MODIFY
                | NGX_HTTP_UPSTREAM_WEIGHT
                | NGX_HTTP_UPSTREAM_MAX_CONNS
                | NGX_HTTP_UPSTREAM_MAX_FAILS
                | NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                | NGX_HTTP_UPSTREAM_DOWN
                | NGX_HTTP_UPSTREAM_BACKUP) as _;
            let (file, line) = conf_location(cf);
            (*ups).conf = upstream_conf_args;
            (*ups).enabled = true;
            (*ups).origin = Origin { file, line };
            CONF_OK
        }
    })
}

/// `dwepc_node ADDRESS [vm=NAME] [cpu=..] ...` inside `upstream {}`.
pub unsafe extern "C" fn cmd_node(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard("cmd_node", CONF_ERROR, || {
        // SAFETY: as in cmd_dwepc.
        unsafe {
            let Some(node) = parsed(cf, conf::parse_node) else {
                return CONF_ERROR;
            };
            let ups = upstream_state(cf, conf);
            if ups.is_null() {
                return CONF_ERROR;
            }
            if (*ups).nodes.iter().any(|n| n.conf.address == node.address) {
                conf_error(
                    cf,
                    &format!("duplicate \"dwepc_node\" for \"{}\"", node.address),
                );
                return CONF_ERROR;
            }
            let (file, line) = conf_location(cf);
            (*ups).nodes.push(NodeDirective {
                conf: node,
                origin: Origin { file, line },
            });
            CONF_OK
        }
    })
}

/// The stock round-robin initialiser we wrap (as least_conn does).
pub fn round_robin_init() -> ngx::ffi::ngx_http_upstream_init_pt {
    Some(ngx_http_upstream_init_round_robin)
}
