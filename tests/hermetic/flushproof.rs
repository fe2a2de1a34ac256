//! The proven flush's report: `proof` is present only for a flush proven in a scratch
//! namespace, with exactly the documented keys; and the scratch tables hold, for every filter
//! shape, flows that must go and flows that must stay according to the selector itself.

use ctguard::evict::Report;
use ctguard::flushproof::{Proof, scratch_table};
use ctguard::select::{Selector, parse_cidr};
use ctguard::{DumpFilter, evict};

/// What a proof showed, for the reports of proven flushes.
pub fn proof() -> Proof {
    Proof {
        scratch_netns: vec![4_026_532_454, 4_026_532_455],
        scratch_flows: 11,
        selected: 6,
        dump_returned: 6,
        flushed: 6,
        kept: 5,
        elapsed_ms: 4.1,
    }
}

#[test]
fn proof_json_is_pinned() {
    let plain = serde_json::to_value(Report::nothing(3, 3, false)).expect("serialise");
    assert!(plain.get("proof").is_none(), "no proof key without a proof");
    let r = Report::proven(proof(), 240_000);
    let v = serde_json::to_value(&r).expect("serialise");
    assert_eq!(v["method"], "kernel-flush");
    let mut keys: Vec<&str> =
        v["proof"].as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dump_returned",
            "elapsed_ms",
            "flushed",
            "kept",
            "scratch_flows",
            "scratch_netns",
            "selected"
        ]
    );
}

/// For selections the flush takes, the scratch table has selected and unselected flows by
/// the selector's own exact check, and the unselected outnumber the criteria.
#[test]
fn scratch_tables_split_by_the_selector() {
    let host = |s: &str| vec![parse_cidr(s).expect("cidr")];
    let cases = [
        Selector { src: host("172.16.3.5"), ..Selector::default() },
        Selector { dst: host("10.0.0.1"), ..Selector::default() },
        Selector { src: host("172.16.3.5"), dst: host("10.0.0.1"), ..Selector::default() },
        Selector { src: host("172.16.3.5"), mark: Some((0x10, 0xff0)), ..Selector::default() },
        Selector { src: host("172.16.3.5"), zone: Some(7), ..Selector::default() },
        Selector { src: host("172.16.3.5"), status_set: 4, ..Selector::default() },
    ];
    for sel in &cases {
        let filter: DumpFilter =
            evict::flush_filter(sel, Some((6, 18)), false).expect("a flushable selection");
        let table = scratch_table(&filter);
        let selected = table.iter().filter(|f| sel.matches(f)).count();
        assert!(selected >= 2, "{sel:?}: {selected} selected");
        assert!(table.len() - selected >= 4, "{sel:?}: {} kept", table.len() - selected);
    }
}
