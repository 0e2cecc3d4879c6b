// Build script of the nginx module: passes nginx-sys metadata (feature flags,
// the build directory of the nginx it was built against) to the crate and to
// the integration tests, which run that very nginx binary.
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    // nginx 1.27.3 added re-resolvable servers to the open-source upstream
    // zone: peers gained a reference count and the peer list a config
    // version that balancers must check (as least_conn does).
    println!("cargo::rustc-check-cfg=cfg(dwepc_peer_refs)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    if let Ok(v) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        if v.parse::<u64>().unwrap_or(0) >= 1_027_003 {
            println!("cargo::rustc-cfg=dwepc_peer_refs");
        }
    }
    // the commit the module is built from, for its status page
    // (`unknown` outside a git checkout)
    println!("cargo::rerun-if-changed=.git/HEAD");
    println!("cargo::rerun-if-changed=.git/refs/heads");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=DWEPC_COMMIT={commit}");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=DEP_NGINX_BUILD_DIR={dir}");
    }
}
