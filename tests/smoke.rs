mod common;
use common::*;

#[test]
fn loads_and_balances_by_weight_without_counters() {
    // `pick=least_conn` falls back to weighted round robin without counters
    let b1 = backend::Backend::start("b1");
    let b2 = backend::Backend::start("b2");
    let port = free_port();
    let text = nginx::conf(
        "worker_processes 1;",
        &format!(
            "upstream app {{ dwepc pick=least_conn; server {} weight=3; server {}; }}\n\
             upstream dflt {{ dwepc; server {} weight=3; server {}; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} location = /dwepc {{ dwepc_status; }} }}",
            b1.addr(),
            b2.addr(),
            b1.addr(),
            b2.addr()
        ),
    );
    let ng = nginx::Nginx::start(&text, port);
    for _ in 0..40 {
        assert_eq!(http::get(port, "/").status, 200);
    }
    assert_eq!((b1.served(), b2.served()), (30, 10));
    let st = http::get(port, "/dwepc");
    println!("{}", st.body);
    let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
    assert_eq!(v["upstreams"][0]["balancing"], "round_robin");
    assert_eq!(v["upstreams"][0]["peers"][0]["requests"], 30);
    // choices= as written (the default: auto, every server compared in
    // a list this small), nothing drawn without counters
    assert_eq!(
        (&v["upstreams"][0]["choices"], &v["upstreams"][0]["drawn"]),
        (&serde_json::json!("auto"), &serde_json::Value::Null),
        "{v}"
    );
    // the build that answers: the crate's version and its commit
    let version = v["version"].as_str().unwrap_or_default();
    assert!(
        version.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")) && version.len() > 6,
        "{version}"
    );
    let prom = http::get(port, "/dwepc?format=prometheus").body;
    assert!(
        prom.contains(&format!("dwepc_build_info{{version=\"{version}\"}} 1")),
        "{prom}"
    );
    // the default pick (least_time per share) without counters balances by
    // response times on weight=, not round robin
    assert_eq!(
        (
            v["upstreams"][1]["name"].as_str(),
            v["upstreams"][1]["balancing"].as_str(),
            v["upstreams"][1]["reason"].as_str()
        ),
        (Some("dflt"), Some("response_times"), Some("no_endpoint")),
        "{v}"
    );
    drop(ng);
}
