//! `dwepc_node ADDRESS [vm=NAME] [cpu=MHZ] [mem=MB] [net=KBPS] [disk=KBPS]
//! [ACCOUNTING]` inside `upstream {}`: how one server's VM is found, its
//! capacities where vSphere's are wrong or missing, its own accounting;
//! and which server each line applies to.

use super::accounting::Accounting;
use super::value::{invalid, once, parse_f64, split};
use super::ConfError;
use crate::resources::{Res, MAX_CAPACITY, R, RESOURCES, UNITS};

/// How an upstream server is found among the VMs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmRef {
    /// By the server's IP among the VMs' guest IPs (default).
    GuestIp,
    /// By VM name.
    Name(String),
}

/// Arguments of `dwepc_node`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConf {
    /// Server address as written in the `server` directive (or its
    /// resolved `ip:port`).
    pub address: String,
    /// VM lookup.
    pub vm: VmRef,
    /// Capacity overrides (NaN = take it from vSphere).
    pub capacity: Res,
    /// Accounting for this node.
    pub accounting: Accounting,
}

/// Parses the words after `dwepc_node`.
pub fn parse_node(args: &[&str]) -> Result<NodeConf, ConfError> {
    let Some((address, rest)) = args.split_first() else {
        return Err(ConfError::NoServerAddress);
    };
    if address.contains('=') || address.is_empty() {
        return Err(ConfError::BadServerAddress(address.to_string()));
    }
    let mut n = NodeConf {
        address: address.to_string(),
        vm: VmRef::GuestIp,
        capacity: [f64::NAN; R],
        accounting: Accounting::default(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for arg in rest {
        let (key, val) = split(arg)?;
        once(&mut seen, key)?;
        if key == "vm" {
            if val.is_empty() || val.len() > 255 {
                return Err(invalid(key, val, "a VM name"));
            }
            n.vm = VmRef::Name(val.to_string());
            continue;
        }
        if let Some(j) = RESOURCES.iter().position(|r| *r == key) {
            n.capacity[j] = match parse_f64(val) {
                Some(x) if (1.0..=MAX_CAPACITY[j]).contains(&x) => x,
                _ => {
                    let want =
                        format!("a capacity in {} from 1 to {:e}", UNITS[j], MAX_CAPACITY[j]);
                    return Err(invalid(key, val, &want));
                }
            };
            continue;
        }
        match n.accounting.parse(key, val) {
            Some(r) => r?,
            None => return Err(ConfError::InvalidParameter(arg.to_string())),
        }
    }
    Ok(n)
}

/// The `dwepc_node` line (index into `nodes`, their addresses) that applies
/// to each server (`(name, server)`: its `ip:port` and its address as
/// written); a node line matching no server is an error naming it.
pub fn match_nodes(nodes: &[&str], servers: &[(&str, &str)]) -> Result<Vec<Option<usize>>, usize> {
    let mut out = vec![None; servers.len()];
    for (k, node) in nodes.iter().enumerate() {
        let mut found = false;
        for (i, (name, server)) in servers.iter().enumerate() {
            if name == node || server == node {
                out[i] = Some(k);
                found = true;
            }
        }
        if !found {
            return Err(k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_parsing() {
        let n = parse_node(&[
            "10.0.0.1:80",
            "vm=web-01",
            "net=1250000",
            "cpu_ratio=2",
            "cpu_reserved=100",
        ])
        .unwrap();
        assert_eq!(n.vm, VmRef::Name("web-01".into()));
        assert_eq!(n.capacity[2], 1_250_000.0);
        assert!(n.capacity[0].is_nan());
        assert_eq!(n.accounting.usable([1000.0, 10.0, 1.0, 1.0])[0], 1900.0);
        assert!(parse_node(&[]).is_err());
        assert!(parse_node(&["vm=x"])
            .unwrap_err()
            .to_string()
            .contains("address"));
        assert!(parse_node(&["a:1", "cpu=0"])
            .unwrap_err()
            .to_string()
            .contains("a capacity in MHz from 1 to 1e7"));
        assert!(parse_node(&["a:1", "gpu=1"])
            .unwrap_err()
            .to_string()
            .contains("invalid parameter"));
    }

    #[test]
    fn node_lines_match_servers_by_address_or_as_written() {
        let servers = [
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("127.0.0.2:80", "web.local:80"),
            ("127.0.0.3:80", "web.local:80"),
        ];
        assert_eq!(
            match_nodes(&["web.local:80", "127.0.0.1:80"], &servers).unwrap(),
            vec![Some(1), Some(0), Some(0)]
        );
        assert_eq!(match_nodes(&["127.0.0.9:80"], &servers), Err(0));
        assert_eq!(match_nodes(&[], &servers).unwrap(), vec![None; 3]);
    }
}
