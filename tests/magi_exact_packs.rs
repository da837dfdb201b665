//! `docs=magi_exact`: the packs MagiAttention's CP benchmark drew, which the comparison with the
//! published CP figures uses. The committed file must be what `launch/magi-cp-packs` rebuilds from
//! the committed length table (numpy's `default_rng(42)`, as the anchor), and the binary must serve
//! those packs as masks — and refuse, in one line with exit 2, the lengths and seeds it does not hold.

use std::collections::BTreeMap;
use std::process::Command;

mod common;
use common::python;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn committed() -> BTreeMap<String, Vec<Vec<usize>>> {
    serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/data/doclen/magi_cp_packs_seed42.json")).unwrap()).unwrap()
}

/// Rebuilding the 8-GPU packs (the cheapest of the four: the shuffle of 13.5 M pieces, ≈ 4 s) gives
/// the committed ones, pack for pack.
#[test]
fn committed_packs_are_what_the_script_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packs.json");
    let o = Command::new(python())
        .arg(format!("{ROOT}/launch/magi-cp-packs"))
        .arg(format!("{ROOT}/data/doclen/magi_default_doc_length_counts.csv"))
        .arg(&out)
        .args(["--worlds", "8"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rebuilt: BTreeMap<String, Vec<Vec<usize>>> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let want = committed();
    assert_eq!(rebuilt.keys().collect::<Vec<_>>(), vec!["65536"]);
    assert_eq!(rebuilt["65536"], want["65536"]);
    assert_eq!(want.keys().collect::<Vec<_>>(), vec!["131072", "262144", "524288", "65536"]);
    assert!(want.values().all(|packs| packs.len() == 20));
}

fn mask_area(seqlen: &str, seed: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
        .args(["mask", "area", "full_document", "--seqlen", seqlen, "--set", "docs=magi_exact", "--set", &format!("seed={seed}"), "--json"])
        .output()
        .unwrap()
}

/// Seed 42 + i is the anchor's pack i: the binary's documents are that pack's lengths (area Σ L²).
#[test]
fn the_binary_serves_the_anchors_packs() {
    let want = committed();
    for (seqlen, i) in [("65536", 0usize), ("524288", 19)] {
        let o = mask_area(seqlen, &(42 + i).to_string());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let pack = &want[seqlen][i];
        assert_eq!(v["area"].as_u64().unwrap(), pack.iter().map(|&l| (l * l) as u64).sum::<u64>());
        assert_eq!(v["slices"].as_u64().unwrap(), pack.len() as u64);
    }
    for (seqlen, seed, needle) in [("100000", "42", "65536, 131072, 262144, 524288"), ("65536", "62", "42–61")] {
        let o = mask_area(seqlen, seed);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle) && err.trim().lines().count() == 1, "{err}");
    }
}
