//! CNI's `ipMasq` for a bridge network: one nftables rule in the host
//! namespace's table `cnet`, proven with traffic (the "outside" namespace
//! has no route back to the containers' subnet, so a reply comes back only
//! when the request left masqueraded) and read back with `nft -j`.

mod common;

use cnet_core::ipam::{FileStore, PoolConfig};
use cnet_core::nat::{self, Masquerade};
use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
use cnet_core::IpNet;
use common::{privileged, TestNs};
use serde_json::Value;

/// The rules of table `ip cnet` as `nft -j` reads them: (comment, the
/// rule's expressions as JSON text).
fn nft_rules(ns: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-j", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == "cnet" && r["family"] == "ip")
        .map(|r| {
            (
                r["comment"].as_str().unwrap_or_default().to_string(),
                r["expr"].to_string(),
            )
        })
        .collect()
}

#[test]
fn network_masquerade_lets_containers_reach_the_outside_and_goes_away() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("masq-h");
    let outside = TestNs::new("masq-o");
    let pod = TestNs::new("masq-p");
    let (h, o) = (host.name.as_str(), outside.name.as_str());
    let sh = |ns: &str, cmd: &str| {
        let st = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-ec", cmd])
            .status()
            .unwrap();
        assert!(st.success(), "{ns}: {cmd}");
    };
    // host ── veth ── outside (203.0.113.0/24); outside has no route to
    // 10.244.0.0/16. Another tool's table in the host, to be left alone.
    sh(h, &format!("ip link add mq-up type veth peer name mq-out netns {o}; ip addr add 203.0.113.1/24 dev mq-up; ip link set mq-up up"));
    sh(
        o,
        "ip addr add 203.0.113.2/24 dev mq-out; ip link set mq-out up",
    );
    sh(h, "nft add table ip other; nft add chain ip other c '{ type filter hook forward priority 0; }'; nft add rule ip other c counter");

    let dir = tempfile::tempdir().unwrap();
    let subnet: IpNet = "10.244.1.0/24".parse().unwrap();
    let pool = FileStore::open(dir.path())
        .unwrap()
        .pool(PoolConfig::new(subnet))
        .unwrap();
    let net =
        BridgeNetwork::ensure(&host.handle(), pool, BridgeConfig::new("mqbr0", subnet)).unwrap();
    net.attach(&ContainerNs::name(&pod.name), "c1", "eth0")
        .unwrap();
    assert!(pod.ping("10.244.1.1"), "the gateway answers");
    assert!(!pod.ping("203.0.113.2"), "no reply without masquerade");

    let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
    assert!(net.masquerade(Some(cluster)).unwrap(), "made");
    assert!(
        pod.ping("203.0.113.2"),
        "the reply comes back to the host's address"
    );
    let rules = nft_rules(h);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "cnet mqbr0: 10.244.1.0/24 -> not 10.244.0.0/16");
    for want in [
        "\"saddr\"",
        "10.244.1.0",
        "\"!=\"",
        "10.244.0.0",
        "224.0.0.0",
        "masquerade",
    ] {
        assert!(rules[0].1.contains(want), "{want} not in {}", rules[0].1);
    }
    assert!(
        !net.masquerade(Some(cluster)).unwrap(),
        "as asked: nothing written"
    );
    // Another exclusion: replaced, still one rule.
    assert!(net.masquerade(None).unwrap());
    let rules = nft_rules(h);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "cnet mqbr0: 10.244.1.0/24 -> not 10.244.1.0/24");
    assert!(pod.ping("203.0.113.2"));
    // A rule of another tag in the same table is not ours to touch.
    let other = Masquerade {
        tag: "cnet other".into(),
        source: "10.244.9.0/24".parse().unwrap(),
        exclude: vec![],
    };
    assert!(nat::ensure_masquerade(&host.handle(), &other).unwrap());

    assert!(net.unmasquerade().unwrap(), "removed");
    assert!(!net.unmasquerade().unwrap(), "gone already: fine");
    assert!(!pod.ping("203.0.113.2"), "no reply once removed");
    let left: Vec<String> = nft_rules(h).into_iter().map(|r| r.0).collect();
    assert_eq!(left, vec![other.comment()]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", h, "nft", "list", "table", "ip", "other"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("counter"),
        "other tables untouched"
    );
}

#[test]
fn network_masquerade_refuses_what_it_cannot_express_and_removes_from_no_table() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("masq-r");
    let h = host.handle();
    assert!(
        !nat::remove_masquerade(&h, "cnet x").unwrap(),
        "no table: nothing to remove"
    );
    assert!(nat::list_nat_rules(&h).unwrap().is_empty());
    let bad = Masquerade {
        tag: "a:b".into(),
        source: "10.244.1.0/24".parse().unwrap(),
        exclude: vec![],
    };
    let e = nat::ensure_masquerade(&h, &bad).unwrap_err();
    assert!(matches!(e, cnet_core::Error::InvalidArgument { .. }), "{e}");
    let v6 = Masquerade {
        tag: "cnet v6".into(),
        source: "fd00:10:244:1::/64".parse().unwrap(),
        exclude: vec!["fd00:10:244::/48".parse().unwrap()],
    };
    assert!(nat::ensure_masquerade(&h, &v6).unwrap());
    let rules = nat::list_nat_rules(&h).unwrap();
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].ipv6 && rules[0].comment == Some(v6.comment()),
        "{rules:?}"
    );
    assert!(nat::remove_masquerade(&h, "cnet v6").unwrap());
}
