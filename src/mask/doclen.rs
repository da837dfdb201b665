//! Document-length sampling for packed (varlen) masks.
//!
//! The histograms are the ones LongCA-bench and MagiAttention sample from (copied, numbers only, into
//! `data/doclen/`, see its README) and are compiled into the binary with `include_str!`, so no file is
//! needed at run time. One sampler is implemented, the README's **Sampler A** (LongCA-bench HEAD
//! `generate_seqlens`): normalise the weights; repeat { pick a bucket with probability ∝ weight; draw an
//! integer uniformly from `[lo, hi]` (both ends inclusive, as the anchor does); cut it to the space
//! still left; raise 0 to 1 } until the lengths sum exactly to the packed length. The last document is
//! therefore usually truncated.
//!
//! Randomness comes from a ChaCha8 generator seeded with the `seed` parameter (not Python's Mersenne
//! Twister), so lengths are the same on every machine and every run for a given seed — but they are not
//! the anchors' exact draws, only draws from the same distribution.

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::MaskError;

/// The generator every seeded mask draw uses.
pub type MaskRng = ChaCha8Rng;

/// A seeded generator: same seed ⇒ same stream on every platform.
pub fn rng(seed: u64) -> MaskRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// One histogram bucket: lengths in `[lo, hi]` (tokens, both inclusive) with a relative weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lo: usize,
    pub hi: usize,
    pub weight: f64,
}

/// A named document-length table compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Corpus {
    /// The value of `docs=` that selects it.
    pub name: &'static str,
    /// One line: what it is and where it comes from.
    pub about: &'static str,
    csv: &'static str,
}

/// Every table `docs=` accepts. `auto` is resolved by [`auto_corpus`] and is not listed here.
pub const CORPORA: &[Corpus] = &[
    Corpus {
        name: "pile",
        about: "Pile doc lengths, 41 fine buckets (LongCA-bench pile.json; its choice for seqlen ≤ 12K)",
        csv: include_str!("../../data/doclen/pile.csv"),
    },
    Corpus {
        name: "prolong64k",
        about: "ProLong-64K doc lengths, 44 buckets up to 61920 (LongCA-bench; 12K < seqlen ≤ 64K)",
        csv: include_str!("../../data/doclen/prolong64k.csv"),
    },
    Corpus {
        name: "prolong512k",
        about: "ProLong-512K doc lengths, 42 buckets up to 475872 (LongCA-bench distributed bench, seqlen ≥ 64K)",
        csv: include_str!("../../data/doclen/prolong512k.csv"),
    },
    Corpus {
        name: "varlen_long",
        about: "hand-set real-world varlen table, 12 buckets up to 4M (MagiAttention kernel bench, sampled there with A')",
        csv: include_str!("../../data/doclen/varlen_long.csv"),
    },
    Corpus {
        name: "varlen_short",
        about: "hand-set short-document table, 18 buckets up to 64K (LongCA-bench fallback for seqlen ≤ 128K)",
        csv: include_str!("../../data/doclen/varlen_short.csv"),
    },
    Corpus {
        name: "magi_default",
        about: "MagiAttention default dataset, 14 count bins up to 196608 (MA packs it with Sampler B; here Sampler A)",
        csv: include_str!("../../data/doclen/magi_default_doc_length_counts.csv"),
    },
    Corpus {
        name: "pile_coarse",
        about: "Pile, ~power-of-two count bins (newer LongCA-bench pile.csv; Sampler B there, Sampler A here)",
        csv: include_str!("../../data/doclen/pile_coarse_counts.csv"),
    },
    Corpus {
        name: "prolong64k_coarse",
        about: "ProLong-64K, 15 count bins (newer LongCA-bench; Sampler B there, Sampler A here)",
        csv: include_str!("../../data/doclen/prolong64k_coarse_counts.csv"),
    },
    Corpus {
        name: "prolong512k_coarse",
        about: "ProLong-512K, 19 count bins (newer LongCA-bench; Sampler B there, Sampler A here)",
        csv: include_str!("../../data/doclen/prolong512k_coarse_counts.csv"),
    },
    Corpus {
        name: "long_8k_30k",
        about: "one uniform bucket 8192..=30720, the long part of LongCA-bench's *_document_long masks",
        csv: include_str!("../../data/doclen/long_doc_8k_30k.csv"),
    },
];

/// `docs=auto` as LongCA-bench's kernel sweep picks it: pile up to 12K tokens (12288), prolong64k above.
pub fn auto_corpus(seqlen: usize) -> &'static str {
    if seqlen <= 12 * 1024 {
        "pile"
    } else {
        "prolong64k"
    }
}

/// `docs=auto` for the `*_document_long` CP masks, as LongCA-bench's distributed bench picks the file:
/// pile up to 12K, prolong64k below 64K, prolong512k from 64K (65536) on.
pub fn auto_corpus_long(seqlen: usize) -> &'static str {
    if seqlen <= 12 * 1024 {
        "pile"
    } else if seqlen < 64 * 1024 {
        "prolong64k"
    } else {
        "prolong512k"
    }
}

/// The buckets of corpus `name` (`docs=` value; `auto` is not accepted here — resolve it first).
pub fn histogram(name: &str) -> Result<Vec<Bucket>, MaskError> {
    let corpus = CORPORA.iter().find(|c| c.name == name).ok_or_else(|| {
        let names: Vec<&str> = CORPORA.iter().map(|c| c.name).collect();
        MaskError::bad("docs", format!("unknown document-length table `{name}` (expected auto, {})", names.join(", ")))
    })?;
    parse_csv(corpus.csv).map_err(|e| MaskError::Invalid(format!("embedded table {name}: {e}")))
}

/// Parses `length_lo,length_hi,weight` rows (with that header). Rejects `lo > hi`, negative or
/// non-finite weights and an all-zero table.
pub fn parse_csv(text: &str) -> Result<Vec<Bucket>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(h) if h.trim() == "length_lo,length_hi,weight" => {}
        other => return Err(format!("expected header `length_lo,length_hi,weight`, got {other:?}")),
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 3 {
            return Err(format!("row {}: expected 3 fields, got `{line}`", n + 1));
        }
        let lo: usize = f[0].parse().map_err(|_| format!("row {}: bad length_lo `{}`", n + 1, f[0]))?;
        let hi: usize = f[1].parse().map_err(|_| format!("row {}: bad length_hi `{}`", n + 1, f[1]))?;
        let weight: f64 = f[2].parse().map_err(|_| format!("row {}: bad weight `{}`", n + 1, f[2]))?;
        if lo > hi || !weight.is_finite() || weight < 0.0 {
            return Err(format!("row {}: need lo ≤ hi and a finite weight ≥ 0, got `{line}`", n + 1));
        }
        out.push(Bucket { lo, hi, weight });
    }
    if out.iter().all(|b| b.weight == 0.0) {
        return Err("all weights are zero".into());
    }
    Ok(out)
}

/// Sampler A: document lengths (each ≥ 1) summing exactly to `total` tokens. Empty when `total` is 0.
/// O(number of documents).
pub fn sample_lengths(buckets: &[Bucket], total: usize, rng: &mut MaskRng) -> Vec<usize> {
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    let pick = WeightedIndex::new(buckets.iter().map(|b| b.weight)).expect("parse_csv rejects all-zero tables");
    let mut left = total;
    while left > 0 {
        let b = buckets[pick.sample(rng)];
        let len = rng.gen_range(b.lo..=b.hi).min(left).max(1);
        out.push(len);
        left -= len;
    }
    out
}

/// Sampler A' (MagiAttention's kernel benchmark, `exps/attn/baselines/utils.py` `generate_seqlens`):
/// each draw only considers buckets with `lo < hi` and `lo ≤` the tokens still left, picks one with
/// probability ∝ weight and draws uniformly from `[lo, min(hi − 1, left)]`; zero lengths are dropped.
/// Used to reproduce the published FA3 varlen kernel figures.
pub fn sample_lengths_a_prime(buckets: &[Bucket], total: usize, rng: &mut MaskRng) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let avail: Vec<&Bucket> = buckets.iter().filter(|b| b.lo < b.hi && b.lo <= left && b.weight > 0.0).collect();
        let Ok(pick) = WeightedIndex::new(avail.iter().map(|b| b.weight)) else {
            out.push(left);
            break;
        };
        let b = avail[pick.sample(rng)];
        let len = rng.gen_range(b.lo..=(b.hi - 1).min(left));
        if len > 0 {
            out.push(len);
            left -= len;
        }
    }
    out
}

/// `docs=` value of the packed MagiAttention lengths ([`pack_lengths`] over `magi_default`, chunk ¼).
pub const MAGI_PACKED: &str = "magi_packed";

/// Sampler B, the one behind the CP figures LongCA-bench's authors published (MagiAttention
/// `exps/dist_attn/benchmark/utils.py` `DatasetSampler`, chunk_ratio 0.25 in `benchmark_conf.py`):
/// every count bin is ONE length, its integer midpoint ⌊(lo + hi)/2⌋, repeated `weight` times; a
/// document longer than `chunk = ⌊chunk_ratio · pack_len⌋` is cut into pieces of `chunk` plus the
/// remainder; the pieces are shuffled and laid end to end into packs of exactly `pack_len` tokens (a
/// piece that does not fit is split and its rest opens the next pack). The anchor shuffles the whole
/// dataset (13.5 M documents); here the pieces are drawn independently with probability ∝ their
/// count, which is the same distribution without materialising it, and the second pack of the stream
/// is returned (so that, as in the anchor, a pack usually starts with the rest of a split piece).
/// Lengths are ≥ 1 and sum to `pack_len`. Seeded draws, not the anchor's numpy ones.
pub fn pack_lengths(buckets: &[Bucket], pack_len: usize, chunk_ratio: f64, rng: &mut MaskRng) -> Vec<usize> {
    if pack_len == 0 {
        return Vec::new();
    }
    let chunk = ((pack_len as f64 * chunk_ratio).floor() as usize).clamp(1, pack_len);
    // (piece length, weight): full chunks of every long document, and every non-zero remainder.
    let mut pieces: Vec<(usize, f64)> = Vec::new();
    for b in buckets.iter().filter(|b| b.weight > 0.0) {
        let len = (b.lo + b.hi) / 2;
        let (full, tail) = (len / chunk, len % chunk);
        if full > 0 {
            pieces.push((chunk, b.weight * full as f64));
        }
        if tail > 0 {
            pieces.push((tail, b.weight));
        }
    }
    if pieces.is_empty() {
        return vec![pack_len];
    }
    let pick = WeightedIndex::new(pieces.iter().map(|p| p.1)).expect("positive weights");
    let mut carry = 0usize;
    let mut pack = Vec::new();
    for _ in 0..2 {
        pack.clear();
        let mut left = pack_len;
        if carry > 0 {
            let c = carry.min(left);
            pack.push(c);
            left -= c;
            carry -= c;
        }
        while left > 0 {
            let len = pieces[pick.sample(rng)].0;
            if len <= left {
                pack.push(len);
                left -= len;
            } else {
                pack.push(left);
                carry = len - left;
                left = 0;
            }
        }
    }
    pack
}

/// `docs=` value of the exact packs MagiAttention's CP benchmark drew ([`exact_pack`]).
pub const MAGI_EXACT: &str = "magi_exact";

/// The exact packs behind the published CP figures, by pack length (tokens): MagiAttention's
/// `DatasetSampler` at commit 09fc31b2 with its configuration (the `magi_default` table, chunk ratio
/// 0.25, numpy `default_rng(42)`), first 20 packs at 8K tokens × 8, 16, 32 and 64 GPUs, rebuilt by
/// `launch/magi-cp-packs` (which follows that sampler step by step; a test reruns it).
const MAGI_EXACT_JSON: &str = include_str!("../../data/doclen/magi_cp_packs_seed42.json");

/// Document lengths of each pack, by pack length in tokens.
type PacksByLength = std::collections::BTreeMap<usize, Vec<Vec<usize>>>;

/// The seed of the anchor's draw; `seed = 42 + i` selects its pack `i`.
pub const MAGI_EXACT_FIRST_SEED: u64 = 42;

/// Pack `seed − 42` of the packs MagiAttention's CP benchmark measured at `pack_len` tokens (the
/// published figures average packs 0–19, i.e. seeds 42–61). Unlike [`pack_lengths`] these are not
/// draws from the distribution but the anchor's own draw, so a comparison with its figures sees the
/// very masks it timed: at 64 GPUs its 20 packs have a mean full-document density of 0.043, where the
/// sampler's long-run mean (all 45 760 packs of that draw, or ours) is 0.054. Only the pack lengths the
/// file holds are available; any other length is an error naming them.
pub fn exact_pack(pack_len: usize, seed: u64) -> Result<Vec<usize>, MaskError> {
    static PACKS: std::sync::OnceLock<Result<PacksByLength, String>> = std::sync::OnceLock::new();
    let all = PACKS
        .get_or_init(|| serde_json::from_str(MAGI_EXACT_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| MaskError::Invalid(format!("embedded {MAGI_EXACT} packs: {e}")))?;
    let have = || all.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
    let packs = all.get(&pack_len).ok_or_else(|| {
        MaskError::bad("docs", format!("{MAGI_EXACT} has packs of {} tokens only, not {pack_len} (use docs={MAGI_PACKED} for draws at any length)", have()))
    })?;
    let last = MAGI_EXACT_FIRST_SEED + packs.len() as u64 - 1;
    let i = seed.checked_sub(MAGI_EXACT_FIRST_SEED).filter(|&i| i < packs.len() as u64).ok_or_else(|| {
        MaskError::bad("seed", format!("{MAGI_EXACT} holds the anchor's packs 0–{} as seeds {MAGI_EXACT_FIRST_SEED}–{last}, not {seed}", packs.len() - 1))
    })?;
    Ok(packs[i as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_table_parses() {
        for c in CORPORA {
            let b = histogram(c.name).unwrap();
            assert!(!b.is_empty(), "{}", c.name);
        }
        assert_eq!(histogram("pile").unwrap().len(), 41);
        assert_eq!(histogram("prolong64k").unwrap().len(), 44);
        assert_eq!(histogram("prolong512k").unwrap().len(), 42);
        assert_eq!(histogram("varlen_long").unwrap().len(), 12);
        assert_eq!(histogram("long_8k_30k").unwrap(), vec![Bucket { lo: 8192, hi: 30720, weight: 1.0 }]);
    }

    #[test]
    fn unknown_table_names_the_key() {
        let e = histogram("wiki").unwrap_err().to_string();
        assert!(e.contains("`docs`") && e.contains("wiki"), "{e}");
    }

    #[test]
    fn bad_csv_rejected() {
        assert!(parse_csv("lo,hi,w\n1,2,3").is_err());
        assert!(parse_csv("length_lo,length_hi,weight\n5,2,1").is_err());
        assert!(parse_csv("length_lo,length_hi,weight\n1,2,-1").is_err());
        assert!(parse_csv("length_lo,length_hi,weight\n1,2,0").is_err());
        assert!(parse_csv("length_lo,length_hi,weight\n1,2").is_err());
    }

    #[test]
    fn lengths_sum_exactly_and_stay_in_buckets() {
        for name in ["pile", "prolong64k", "varlen_short", "magi_default", "long_8k_30k"] {
            let b = histogram(name).unwrap();
            let max_hi = b.iter().map(|x| x.hi).max().unwrap();
            for total in [1usize, 2, 7, 1000, 4097, 65536] {
                let lens = sample_lengths(&b, total, &mut rng(3));
                assert_eq!(lens.iter().sum::<usize>(), total, "{name} {total}");
                assert!(lens.iter().all(|&l| l >= 1 && l <= max_hi.max(1)));
                // All but the last document are uncut draws, so they lie in some bucket.
                for &l in &lens[..lens.len() - 1] {
                    assert!(b.iter().any(|x| x.lo.max(1) <= l && l <= x.hi), "{name}: {l}");
                }
            }
        }
    }

    #[test]
    fn same_seed_same_lengths_pinned() {
        let b = histogram("pile").unwrap();
        let a = sample_lengths(&b, 8192, &mut rng(42));
        assert_eq!(a, sample_lengths(&b, 8192, &mut rng(42)));
        assert_ne!(a, sample_lengths(&b, 8192, &mut rng(43)));
        // Pinned values: a change here means every seeded mask changed (RNG or sampler changed).
        assert_eq!(&a[..6], PINNED_PILE_8192_SEED42);
        let l = sample_lengths(&histogram("long_8k_30k").unwrap(), 100_000, &mut rng(7));
        assert_eq!(&l[..3], PINNED_LONG_SEED7);
    }

    const PINNED_PILE_8192_SEED42: &[usize] = &[447, 202, 818, 152, 101, 183];
    const PINNED_LONG_SEED7: &[usize] = &[11976, 16288, 27325];

    #[test]
    fn auto_follows_longca() {
        assert_eq!(auto_corpus(12288), "pile");
        assert_eq!(auto_corpus(12289), "prolong64k");
        assert_eq!(auto_corpus(1 << 20), "prolong64k");
        assert_eq!(auto_corpus_long(8192), "pile");
        assert_eq!(auto_corpus_long(32768), "prolong64k");
        assert_eq!(auto_corpus_long(65536), "prolong512k");
    }

    #[test]
    fn packs_follow_the_anchor_rules() {
        let b = histogram("magi_default").unwrap();
        for (pack, seed) in [(65536usize, 42u64), (131072, 43), (524288, 44), (1000, 1)] {
            let lens = pack_lengths(&b, pack, 0.25, &mut rng(seed));
            assert_eq!(lens.iter().sum::<usize>(), pack);
            assert!(lens.iter().all(|&l| l >= 1 && l <= pack / 4), "{pack}: {lens:?}");
            // Away from the pack's two ends, every piece is a bin midpoint, a full chunk or a
            // remainder of a midpoint by the chunk.
            let chunk = pack / 4;
            let ok: Vec<usize> = b.iter().flat_map(|x| [((x.lo + x.hi) / 2).min(chunk), ((x.lo + x.hi) / 2) % chunk]).collect();
            for &l in &lens[1..lens.len() - 1] {
                assert!(ok.contains(&l), "{pack}: {l}");
            }
        }
        let a = pack_lengths(&b, 65536, 0.25, &mut rng(42));
        assert_eq!(a, pack_lengths(&b, 65536, 0.25, &mut rng(42)));
        assert_ne!(a, pack_lengths(&b, 65536, 0.25, &mut rng(43)));
    }

    #[test]
    fn a_prime_sums_exactly_within_available_buckets() {
        let b = histogram("varlen_long").unwrap();
        for total in [1usize, 1024, 4096, 32768] {
            let lens = sample_lengths_a_prime(&b, total, &mut rng(5));
            assert_eq!(lens.iter().sum::<usize>(), total);
            assert!(lens.iter().all(|&l| l >= 1 && l <= total));
        }
        // Below 2048 tokens only the first bucket (0..2048) is available: lengths < 2048.
        assert!(sample_lengths_a_prime(&b, 2000, &mut rng(6)).iter().all(|&l| l < 2048));
    }

    /// The anchor's packs: 20 per published size, each exactly its pack length, every piece a bin
    /// midpoint, a full chunk or a remainder (as the packer makes them) away from the pack's ends;
    /// outside the grid and the 20 seeds, an error naming what is there.
    #[test]
    fn exact_packs_are_the_anchors_draw() {
        let b = histogram("magi_default").unwrap();
        let mut density = Vec::new();
        for w in [8usize, 16, 32, 64] {
            let pack = 8192 * w;
            let chunk = pack / 4;
            let ok: Vec<usize> = b.iter().flat_map(|x| [((x.lo + x.hi) / 2).min(chunk), ((x.lo + x.hi) / 2) % chunk]).collect();
            let mut area = 0.0;
            for seed in 42..62 {
                let lens = exact_pack(pack, seed).unwrap();
                assert_eq!(lens.iter().sum::<usize>(), pack, "W={w} seed={seed}");
                for &l in &lens[1..lens.len() - 1] {
                    assert!(ok.contains(&l), "W={w} seed={seed}: {l}");
                }
                area += lens.iter().map(|&l| (l * l) as f64).sum::<f64>();
            }
            density.push(area / 20.0 / (pack * pack) as f64);
        }
        // Mean full-document density of the 20 packs (launch/magi-cp-packs prints the same): the
        // 64-GPU draw is light, the others near the sampler's long-run means (0.117, 0.096, 0.070, 0.054).
        let want = [0.1100, 0.0973, 0.0689, 0.0434];
        for (d, w) in density.iter().zip(want) {
            assert!((d - w).abs() < 5e-5, "{density:?}");
        }
        let e = exact_pack(1 << 20, 42).unwrap_err().to_string();
        assert!(e.contains("65536, 131072, 262144, 524288") && e.contains("magi_packed"), "{e}");
        assert!(exact_pack(65536, 62).unwrap_err().to_string().contains("42–61"));
        assert!(exact_pack(65536, 41).is_err());
    }
}
