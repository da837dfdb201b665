//! The pattern zoo: one small builder per pattern, registered in [`PATTERNS`].
//!
//! Notation (as in DESIGN.md): S = seqlen, i = query, j = key (both in `[0, S)`), doc(i) = index of the
//! document holding token i, s(i) = that document's first token. Every builder emits a number of slices
//! proportional to the number of documents / blocks (never to S), so a 1M-token mask with 10⁴ documents
//! builds and measures in milliseconds. The differences to LongCA-bench (LC) and MagiAttention (MA) noted
//! in each doc comment come from `docs/ANCHOR-MASKS.md`.
//!
//! Adding a pattern = one builder function + one entry in [`PATTERNS`] (+ its predicate in the tests).

use rand::seq::SliceRandom;

use super::doclen;
use super::{HeadMasks, Mask, MaskError, Params, Slice, SliceKind};

/// A declared parameter of a pattern: key, default (as text, may depend on seqlen, e.g. `seqlen/4`),
/// and a one-line description.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// One pattern of the zoo: name, a one-line definition, its parameters and its builder.
pub struct Pattern {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    pub build: fn(usize, &Params) -> Result<HeadMasks, MaskError>,
}

const WINDOW: ParamSpec = ParamSpec { key: "window", default: "1024", help: "window in tokens (keys i−window..i)" };
const WINDOW_LEFT: ParamSpec = ParamSpec { key: "window_left", default: "1024", help: "keys before the query (tokens)" };
const WINDOW_RIGHT: ParamSpec = ParamSpec { key: "window_right", default: "1024", help: "keys after the query (tokens)" };
const GLOBAL: ParamSpec = ParamSpec { key: "global", default: "64", help: "leading global tokens (see and seen by all)" };
const WINDOW_SYM: ParamSpec = ParamSpec { key: "window", default: "1024", help: "band half-width: |i − j| ≤ window" };
const WINDOW_LC: ParamSpec = ParamSpec { key: "window", default: "1024", help: "W of LC's slices (LC draws it uniformly in 1..S/3−1); clamped to seqlen" };
const PREFIX: ParamSpec =
    ParamSpec { key: "prefix", default: "seqlen/4", help: "bidirectional prefix length (tokens; ≥ seqlen: the whole sequence, = full)" };
const PREFIX_DOC: ParamSpec = ParamSpec {
    key: "prefix",
    default: "min(1024, seqlen/4)",
    help: "bidirectional prefix of every document (tokens; ≥ a document's length: that document is full)",
};
const BLOCK_DOC: ParamSpec = ParamSpec { key: "block", default: "1024", help: "block size in tokens, counted from each doc start" };
const DOC_LENS: ParamSpec = ParamSpec { key: "doc_lens", default: "", help: "explicit document lengths a,b,c (each ≥ 1, sum = seqlen)" };
const DOCS: ParamSpec = ParamSpec {
    key: "docs",
    default: "auto",
    help: "length table (`attnbench list docs`); auto = pile ≤ 12K tokens, else prolong64k; magi_packed = MagiAttention's CP packer (our draws); magi_exact = its own packs (64K–512K, seed 42–61)",
};
const DOCS_LONG: ParamSpec =
    ParamSpec { key: "docs", default: "auto", help: "table for the 40 % part; auto = pile ≤ 12K, prolong64k < 64K, else prolong512k" };
const SEED: ParamSpec = ParamSpec { key: "seed", default: "42", help: "RNG seed (ChaCha8) for sampled lengths" };
const DENSITY: ParamSpec = ParamSpec { key: "density", default: "0.1", help: "fraction of tiles attended, in (0, 1]" };
const BLOCK_SPARSE: ParamSpec = ParamSpec { key: "block", default: "128", help: "tile size in tokens (≥ 1)" };
const SEED_TILES: ParamSpec = ParamSpec { key: "seed", default: "42", help: "RNG seed (ChaCha8) for the tile draw" };
const PATTERNS_KEY: ParamSpec =
    ParamSpec { key: "patterns", default: "causal,sliding_window_causal", help: "comma-separated pattern per head group (groups must divide the query heads)" };

/// Keys `per_head` forwards to its group patterns (every key some pattern declares, except `patterns`).
const PER_HEAD_PARAMS: &[ParamSpec] = &[
    PATTERNS_KEY,
    ParamSpec { key: "window", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "window_left", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "window_right", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "global", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "prefix", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "block", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "density", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "doc_lens", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "docs", default: "(group's)", help: "passed to groups that take it" },
    ParamSpec { key: "seed", default: "(group's)", help: "passed to groups that take it" },
];

pub const PATTERNS: &[Pattern] = &[
    Pattern { name: "full", summary: "every query attends every key", params: &[], build: full },
    Pattern { name: "causal", summary: "j ≤ i", params: &[], build: causal },
    Pattern { name: "sliding_window", summary: "i − window_left ≤ j ≤ i + window_right", params: &[WINDOW_LEFT, WINDOW_RIGHT], build: sliding_window },
    Pattern { name: "sliding_window_causal", summary: "i − window ≤ j ≤ i", params: &[WINDOW], build: sliding_window_causal },
    Pattern {
        name: "global_sliding_window",
        summary: "|i − j| ≤ window, or j < global, or i < global",
        params: &[GLOBAL, WINDOW_SYM],
        build: global_sliding_window,
    },
    Pattern {
        name: "global_sliding_window_longca",
        summary: "LongCA-bench's literal global_sliding_window slices (compat; not the intended shape)",
        params: &[WINDOW_LC],
        build: global_sliding_window_longca,
    },
    Pattern { name: "prefix_lm_causal", summary: "j ≤ i or j < prefix", params: &[PREFIX], build: prefix_lm_causal },
    Pattern { name: "full_document", summary: "doc(i) = doc(j)", params: &[DOC_LENS, DOCS, SEED], build: full_document },
    Pattern { name: "causal_document", summary: "doc(i) = doc(j) and j ≤ i", params: &[DOC_LENS, DOCS, SEED], build: causal_document },
    Pattern {
        name: "prefix_lm_document",
        summary: "doc(i) = doc(j) and (j ≤ i or j − s(j) < prefix)",
        params: &[PREFIX_DOC, DOC_LENS, DOCS, SEED],
        build: prefix_lm_document,
    },
    Pattern {
        name: "share_question",
        summary: "(doc(i) = doc(j) and j ≤ i) or (doc(j) = 0 and doc(i) ≠ 0)",
        params: &[DOC_LENS, DOCS, SEED],
        build: share_question,
    },
    Pattern {
        name: "causal_blockwise",
        summary: "(doc(i) = doc(j) and j ≤ i) or (doc(i) is the last doc and j ≤ i)",
        params: &[DOC_LENS, DOCS, SEED],
        build: causal_blockwise,
    },
    Pattern {
        name: "block_causal_document",
        summary: "doc(i) = doc(j) and j < s(i) + (⌊(i − s(i))/block⌋ + 1)·block",
        params: &[BLOCK_DOC, DOC_LENS, DOCS, SEED],
        build: block_causal_document,
    },
    Pattern {
        name: "full_document_long",
        summary: "doc(i) = doc(j); 40 % of tokens from the corpus table, 60 % docs of 8K–30K, shuffled",
        params: &[DOCS_LONG, SEED],
        build: full_document_long,
    },
    Pattern {
        name: "causal_document_long",
        summary: "doc(i) = doc(j) and j ≤ i; 40 % corpus docs, 60 % docs of 8K–30K, shuffled",
        params: &[DOCS_LONG, SEED],
        build: causal_document_long,
    },
    Pattern {
        name: "block_sparse",
        summary: "random block×block tiles, a `density` fraction of them, diagonal tiles always on",
        params: &[DENSITY, BLOCK_SPARSE, SEED_TILES],
        build: block_sparse,
    },
    Pattern { name: "per_head", summary: "one pattern per head group (MoA-style heterogeneous heads)", params: PER_HEAD_PARAMS, build: per_head },
];

/// Largest accepted sequence length: 2³¹ tokens, so S² (the largest area) fits a u64 with room to spare.
pub const MAX_SEQLEN: usize = 1 << 31;

pub fn find_pattern(name: &str) -> Result<&'static Pattern, MaskError> {
    PATTERNS.iter().find(|p| p.name == name).ok_or_else(|| MaskError::UnknownPattern(name.to_string()))
}

/// Builds pattern `name` at `seqlen` with `params`, rejecting undeclared keys.
pub fn build_pattern(name: &str, seqlen: usize, params: &Params) -> Result<HeadMasks, MaskError> {
    let p = find_pattern(name)?;
    if seqlen == 0 {
        return Err(MaskError::bad("seqlen", "must be at least 1"));
    }
    if seqlen > MAX_SEQLEN {
        return Err(MaskError::bad("seqlen", format!("must be ≤ {MAX_SEQLEN} (areas are counted in u64), got {seqlen}")));
    }
    let keys: Vec<&str> = p.params.iter().map(|s| s.key).collect();
    params.check_known(name, &keys)?;
    (p.build)(seqlen, params)
}

fn shared(s: usize, slices: Vec<Slice>) -> Result<HeadMasks, MaskError> {
    Ok(HeadMasks::shared(Mask::new(s, slices)?))
}

// ---------------------------------------------------------------------------------------------------
// Helpers: bands and document boundaries
// ---------------------------------------------------------------------------------------------------

/// Slices of the band `i − wl ≤ j ≤ i + wr` restricted to the square region `[o, o + len)²` — at most
/// three: a causal top part (rows whose left edge is clamped at `o`), a bi-causal (or full) middle band,
/// an inv-causal bottom part (rows whose right edge is clamped at `o + len − 1`); the same shape as
/// MagiAttention's `infer_attn_mask_from_sliding_window`. Windows ≥ `len` are clamped (= unbounded).
fn band(o: usize, len: usize, wl: usize, wr: usize) -> Vec<Slice> {
    let (wl, wr) = (wl.min(len), wr.min(len));
    // Local rows: the left edge is clamped to 0 for a < wl, the right edge to len − 1 for a ≥ len − wr.
    let mut cuts = vec![0, wl, len - wr, len];
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(3);
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a >= b {
            continue;
        }
        let lo_clamped = a < wl; // whole piece is on one side of each cut
        let hi_clamped = a >= len - wr;
        let (k, kind) = match (lo_clamped, hi_clamped) {
            (true, true) => (0..len, SliceKind::Full),
            // keys 0..=a'+wr: bottom-right causal with k_len − q_len = a + wr
            (true, false) => (0..b + wr, SliceKind::Causal),
            (false, false) => (a - wl..b + wr, SliceKind::BiCausal),
            (false, true) => (a - wl..len, SliceKind::InvCausal),
        };
        out.push(Slice::new(o + a..o + b, o + k.start..o + k.end, kind));
    }
    out
}

/// Document start offsets `c_0 = 0 < c_1 < … < c_n = S` from lengths.
fn bounds(lens: &[usize]) -> Vec<usize> {
    let mut c = Vec::with_capacity(lens.len() + 1);
    c.push(0);
    let mut acc = 0;
    for &l in lens {
        acc += l;
        c.push(acc);
    }
    c
}

fn seed(p: &Params) -> Result<u64, MaskError> {
    p.u64_or("seed", 42)
}

/// Document lengths of a document pattern: `doc_lens=a,b,c` (each ≥ 1, summing to `seqlen`) if given,
/// else Sampler A over the `docs` table (`auto`: pile if seqlen ≤ 12288, else prolong64k, as
/// LongCA-bench's kernel sweep) with `seed` [42]; `docs=magi_packed` is Sampler B instead
/// ([`doclen::pack_lengths`]: the CP benchmark's packs of the `magi_default` table, chunk ¼ of the pack),
/// `docs=magi_exact` that benchmark's own packs ([`doclen::exact_pack`], pack `seed − 42`, at the pack
/// lengths of the published grid). Giving both `doc_lens` and `docs` is an error.
pub fn doc_lengths(seqlen: usize, p: &Params) -> Result<Vec<usize>, MaskError> {
    if let Some(lens) = p.usize_list("doc_lens")? {
        if p.get("docs").is_some() {
            return Err(MaskError::bad("doc_lens", "give either doc_lens or docs, not both"));
        }
        if lens.is_empty() {
            return Err(MaskError::bad("doc_lens", "needs at least one length"));
        }
        if lens.contains(&0) {
            return Err(MaskError::bad("doc_lens", "every document length must be ≥ 1"));
        }
        let sum: usize = lens.iter().sum();
        if sum != seqlen {
            return Err(MaskError::bad("doc_lens", format!("lengths sum to {sum}, but seqlen is {seqlen}")));
        }
        return Ok(lens);
    }
    let name = match p.get("docs").unwrap_or("auto") {
        "auto" => doclen::auto_corpus(seqlen),
        doclen::MAGI_PACKED => return Ok(doclen::pack_lengths(&doclen::histogram("magi_default")?, seqlen, 0.25, &mut doclen::rng(seed(p)?))),
        doclen::MAGI_EXACT => return doclen::exact_pack(seqlen, seed(p)?),
        other => other,
    };
    let hist = doclen::histogram(name)?;
    Ok(doclen::sample_lengths(&hist, seqlen, &mut doclen::rng(seed(p)?)))
}

/// Document lengths of the `*_document_long` patterns, as LongCA-bench HEAD's `mask.py` builds them:
/// int(0.4·S) tokens from the corpus table (`docs`, `auto` = the distributed bench's choice: pile ≤ 12K,
/// prolong64k < 64K, prolong512k from 64K), the other S − int(0.4·S) tokens from lengths uniform in
/// 8192..=30720, both with Sampler A from one seeded stream; the two lists concatenated and shuffled.
pub fn long_doc_lengths(seqlen: usize, p: &Params) -> Result<Vec<usize>, MaskError> {
    let name = match p.get("docs").unwrap_or("auto") {
        "auto" => doclen::auto_corpus_long(seqlen),
        other => other,
    };
    let corpus = doclen::histogram(name)?;
    let long = doclen::histogram("long_8k_30k")?;
    let mut rng = doclen::rng(seed(p)?);
    let head = (seqlen as u128 * 2 / 5) as usize; // int(0.4·S) in exact integer arithmetic
    let mut lens = doclen::sample_lengths(&corpus, head, &mut rng);
    lens.extend(doclen::sample_lengths(&long, seqlen - head, &mut rng));
    lens.shuffle(&mut rng);
    Ok(lens)
}

/// One slice per document, q = k = the document, of the given kind.
fn per_doc(s: usize, lens: &[usize], kind: SliceKind) -> Result<HeadMasks, MaskError> {
    let c = bounds(lens);
    shared(s, c.windows(2).map(|w| Slice::new(w[0]..w[1], w[0]..w[1], kind)).collect())
}

// ---------------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------------

/// `full`: attend every (i, j). One FULL slice `[0,S)²`. Same in LC and MA.
fn full(s: usize, _: &Params) -> Result<HeadMasks, MaskError> {
    shared(s, vec![Slice::new(0..s, 0..s, SliceKind::Full)])
}

/// `causal`: attend iff j ≤ i. One CAUSAL slice `[0,S)²`. Same in LC and MA.
fn causal(s: usize, _: &Params) -> Result<HeadMasks, MaskError> {
    shared(s, vec![Slice::new(0..s, 0..s, SliceKind::Causal)])
}

/// `sliding_window` window_left [1024], window_right [1024]: attend iff i − left ≤ j ≤ i + right.
/// At most three slices (see [`band`]); a window ≥ S is unbounded on that side.
///
/// Anchors: LC/MA build the same rule with `infer_attn_mask_from_sliding_window` (a window ≥ S or
/// wl + 1 ≥ S gives full). LC's kernel bench is inconsistent about the window it actually runs (the
/// FFA/SDPA masks use (1024, 0), FA2/FA3 (1024, 1024)); ours is the symmetric intent by default.
fn sliding_window(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let wl = p.usize_or("window_left", 1024)?;
    let wr = p.usize_or("window_right", 1024)?;
    shared(s, band(0, s, wl, wr))
}

/// `sliding_window_causal` window [1024]: attend iff i − window ≤ j ≤ i (window + 1 keys including the
/// query itself). At most two slices: causal top, bi-causal band.
///
/// Anchors: same rule in LC and MA (window ≥ S → plain causal). MA's kernel bench counts FLOPs with
/// 1024 keys per row (one fewer than its own mask); we count the mask's exact area.
fn sliding_window_causal(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let w = p.usize_or("window", 1024)?;
    shared(s, band(0, s, w, 0))
}

/// `global_sliding_window` global [64], window [1024]: attend iff |i − j| ≤ window, or j < global, or
/// i < global — the first `global` tokens see and are seen by everyone. Slices: rows `[0,G)` full;
/// rows `[G,S)` × keys `[0,G)` full; the ±window band on `[G,S)²` (≤ 3 slices). global ≥ S → full.
///
/// Anchors: this is the apparent intent of LC/MA. LC's literal slices give a different shape (see
/// `global_sliding_window_longca`), its flex reference uses `i < 2W or j < 2W`, and its FlashMask
/// reference a third variant. Both LC and MA build those literal slices with one W as window and
/// global size (LC draws W at random, MA takes its configured window); here the two are separate.
fn global_sliding_window(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let g = p.usize_or("global", 64)?.min(s);
    let w = p.usize_or("window", 1024)?;
    let mut slices = vec![Slice::new(0..g, 0..s, SliceKind::Full), Slice::new(g..s, 0..g, SliceKind::Full)];
    if g < s {
        slices.extend(band(g, s - g, w, w));
    }
    shared(s, slices)
}

/// `global_sliding_window_longca` window [1024] (W, clamped to S): LongCA-bench HEAD's literal slices
/// (LC mask.py 433–482): (1) q `[0,S)` × k `[0,W)` CAUSAL; (2) q `[0,W)` × k `[W,S)` CAUSAL; (3) the
/// (W, W) sliding window on `[W,S)²`. With bottom-right causal alignment the rule is: (j < W and
/// j ≤ i − (S − W)) or (i < W and W ≤ j ≤ i + S − W) or (i, j ≥ W and |i − j| ≤ W). Kept only to
/// reproduce LC's numbers: LC draws W uniformly in 1..⌊S/3⌋−1 (seed 42) per mask, we take it as a
/// parameter; MA uses the same slices with W from its config (full when W + 1 ≥ S).
fn global_sliding_window_longca(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let w = p.usize_or("window", 1024)?.min(s);
    let mut slices = vec![Slice::new(0..s, 0..w, SliceKind::Causal), Slice::new(0..w, w..s, SliceKind::Causal)];
    if w < s {
        slices.extend(band(w, s - w, w, w));
    }
    shared(s, slices)
}

/// `prefix_lm_causal` prefix [S/4]: attend iff j ≤ i or j < prefix (a prefix ≥ S makes it full, as a
/// window ≥ S makes `sliding_window` full — see [`prefix`]). Slices: `[0,P)²`
/// FULL and q `[P,S)` × k `[0,S)` CAUSAL (bottom-right aligned, so row i sees keys 0..=i).
///
/// Anchors: LC/MA draw P uniformly in 1..=S (seed 42); we take it as a parameter. LC's flex
/// reference uses j ≤ P (one key more per row) — ours is the slices' rule j < P.
fn prefix_lm_causal(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let pre = prefix(p, s, s / 4)?;
    shared(s, vec![Slice::new(0..pre, 0..pre, SliceKind::Full), Slice::new(pre..s, 0..s, SliceKind::Causal)])
}

/// The prefix length, saturated at S. Every length parameter of the zoo (window, window_left,
/// window_right, global, prefix, block) takes any value ≥ 0 and reads a value ≥ S as "the whole
/// sequence", because each pattern's rule is well defined there and the anchors do the same for
/// windows (LC: a window ≥ S is unbounded; MA: w + 1 ≥ S gives full). That lets one suite sweep a
/// fixed window or prefix over lengths below and above it; the row's density shows the saturation.
/// Only a block size of 0 is meaningless and rejected.
fn prefix(p: &Params, s: usize, default: usize) -> Result<usize, MaskError> {
    Ok(p.usize_or("prefix", default)?.min(s))
}

/// `full_document` (varlen full): attend iff doc(i) = doc(j). One FULL slice per document. Same in LC
/// and MA (documents from `doc_lens` or sampled, see [`doc_lengths`]).
fn full_document(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    per_doc(s, &doc_lengths(s, p)?, SliceKind::Full)
}

/// `causal_document` (varlen causal): attend iff doc(i) = doc(j) and j ≤ i. One CAUSAL slice per
/// document. Same in LC and MA.
fn causal_document(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    per_doc(s, &doc_lengths(s, p)?, SliceKind::Causal)
}

/// `prefix_lm_document` prefix [min(1024, S/4)]: attend iff doc(i) = doc(j) and (j ≤ i or
/// j − s(j) < prefix) — every document has a bidirectional prefix of P tokens. Per document `[a,b)` of
/// length L: if P < L, `[a,a+P)²` FULL + q `[a+P,b)` × k `[a,b)` CAUSAL; else the document is FULL.
///
/// Anchors: LC HEAD draws P uniformly in 1..=len(doc 0), LC-new and MA in 1..=min doc length; a fixed,
/// stated default is more useful for comparing runs. LC's flex reference again uses ≤ P.
fn prefix_lm_document(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let pre = prefix(p, s, (s / 4).min(1024))?;
    let c = bounds(&doc_lengths(s, p)?);
    let mut slices = Vec::with_capacity(2 * (c.len() - 1));
    for w in c.windows(2) {
        let (a, b) = (w[0], w[1]);
        if pre < b - a {
            slices.push(Slice::new(a..a + pre, a..a + pre, SliceKind::Full));
            slices.push(Slice::new(a + pre..b, a..b, SliceKind::Causal));
        } else {
            slices.push(Slice::new(a..b, a..b, SliceKind::Full));
        }
    }
    shared(s, slices)
}

/// `share_question`: attend iff (doc(i) = doc(j) and j ≤ i) or (doc(j) = 0 and doc(i) ≠ 0) — document 0
/// is a question every later answer sees in full. Slices as LC/MA: `[0,c₂)²` CAUSAL (question and first
/// answer), q `[c₂,S)` × k `[0,c₁)` FULL, one CAUSAL slice per document d ≥ 2. One document = causal.
/// Same rule in LC, MA and LC's flex reference; the question length is the first sampled length.
fn share_question(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let c = bounds(&doc_lengths(s, p)?);
    let n = c.len() - 1;
    let mut slices = Vec::with_capacity(n + 1);
    if n == 1 {
        slices.push(Slice::new(0..s, 0..s, SliceKind::Causal));
    } else {
        slices.push(Slice::new(0..c[2], 0..c[2], SliceKind::Causal));
        if n > 2 {
            slices.push(Slice::new(c[2]..s, 0..c[1], SliceKind::Full));
        }
        for w in c[2..].windows(2) {
            slices.push(Slice::new(w[0]..w[1], w[0]..w[1], SliceKind::Causal));
        }
    }
    shared(s, slices)
}

/// `causal_blockwise`: attend iff (doc(i) = doc(j) and j ≤ i) or (doc(i) is the last document and
/// j ≤ i) — the last document sees everything before it. One CAUSAL slice per document, the last one's
/// keys widened to `[0,S)` (bottom-right alignment makes that j ≤ i). Same in LC, MA and LC's flex.
fn causal_blockwise(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let c = bounds(&doc_lengths(s, p)?);
    let n = c.len() - 1;
    let mut slices: Vec<Slice> = c[..n].windows(2).map(|w| Slice::new(w[0]..w[1], w[0]..w[1], SliceKind::Causal)).collect();
    slices.push(Slice::new(c[n - 1]..s, 0..s, SliceKind::Causal));
    shared(s, slices)
}

/// `block_causal_document` block [1024] (≥ 1): attend iff doc(i) = doc(j) and
/// j < s(i) + (⌊(i − s(i))/block⌋ + 1)·block — blocks counted from each document's start, a query sees
/// its own block and every earlier block of its document. One FULL slice per (document, block): q = the
/// block, k = `[doc start, block end)`; the last block of a document may be shorter.
///
/// Anchors: this is MA's construction. LC HEAD ignores the length table (documents of 1–8 blocks of
/// 1024, S a multiple of 1024); MA's kernel bench uses block 2048 and varlen_long lengths.
fn block_causal_document(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let block = p.usize_or("block", 1024)?;
    if block == 0 {
        return Err(MaskError::bad("block", "must be ≥ 1"));
    }
    let c = bounds(&doc_lengths(s, p)?);
    let mut slices = Vec::new();
    for w in c.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut q = a;
        while q < b {
            let e = (q + block).min(b);
            slices.push(Slice::new(q..e, a..e, SliceKind::Full));
            q = e;
        }
    }
    shared(s, slices)
}

/// `full_document_long`: attend iff doc(i) = doc(j), with LongCA-bench's CP lengths (see
/// [`long_doc_lengths`]: 40 % of tokens from the corpus table, 60 % from 8192..=30720, shuffled). One
/// FULL slice per document. LC HEAD only (its distributed bench's varlen mask); the RNG is ours.
fn full_document_long(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    per_doc(s, &long_doc_lengths(s, p)?, SliceKind::Full)
}

/// `causal_document_long`: attend iff doc(i) = doc(j) and j ≤ i, lengths as `full_document_long`.
fn causal_document_long(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    per_doc(s, &long_doc_lengths(s, p)?, SliceKind::Causal)
}

/// Most tiles a `block_sparse` mask may switch on (≈ 200 MB while it is built).
pub const MAX_BLOCK_SPARSE_TILES: usize = 1 << 22;

/// `block_sparse` density [0.1], block [128], seed [42]: the S×S grid is cut into ⌈S/block⌉² tiles; a
/// tile is attended in full or not at all. All diagonal tiles are on (so no query row is empty, as a
/// softmax needs); then off-diagonal tiles are drawn uniformly without replacement until
/// max(n, round(density·n²)) tiles are on (n = ⌈S/block⌉). `density` is the tile fraction, in (0, 1]; the
/// area fraction differs slightly when S is not a multiple of block (edge tiles are smaller). Adjacent
/// tiles of a tile row are merged into one FULL slice. Not in LC/MA: a stand-in for learned / top-k
/// block-sparse attention.
fn block_sparse(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let density = p.f64_or("density", 0.1)?;
    if density <= 0.0 || density > 1.0 {
        return Err(MaskError::bad("density", format!("must be in (0, 1], got {density}")));
    }
    let block = p.usize_or("block", 128)?;
    if block == 0 {
        return Err(MaskError::bad("block", "must be ≥ 1"));
    }
    let n = s.div_ceil(block);
    let total = n as u128 * n as u128;
    let want = ((density * total as f64).round() as u128).clamp(n as u128, total);
    // Every tile switched on is held while the mask is built (and drawn through a hash set): bound
    // them before allocating, so a small block at a million tokens is an error, not a 17 GB
    // allocation and an abort (issue 30).
    if want > MAX_BLOCK_SPARSE_TILES as u128 {
        return Err(MaskError::bad(
            "block",
            format!("{block} at seqlen {s} switches on {want} tiles (⌈S/block⌉² × density); at most {MAX_BLOCK_SPARSE_TILES}: use a larger block or a lower density"),
        ));
    }
    let off = (total - n as u128) as usize;
    let extra = (want - n as u128) as usize;
    let mut rng = doclen::rng(seed(p)?);
    // Off-diagonal tile t (0 ≤ t < n² − n) is row r = t / (n − 1), column c = t % (n − 1), skipping r.
    let mut tiles: Vec<(usize, usize)> = rand::seq::index::sample(&mut rng, off, extra)
        .into_iter()
        .map(|t| {
            let (r, c) = (t / (n - 1).max(1), t % (n - 1).max(1));
            (r, if c >= r { c + 1 } else { c })
        })
        .chain((0..n).map(|d| (d, d)))
        .collect();
    tiles.sort_unstable();
    let mut slices = Vec::new();
    let mut i = 0;
    while i < tiles.len() {
        let (r, c0) = tiles[i];
        let mut c1 = c0 + 1;
        i += 1;
        while i < tiles.len() && tiles[i] == (r, c1) {
            c1 += 1;
            i += 1;
        }
        let q = r * block..((r + 1) * block).min(s);
        slices.push(Slice::new(q, c0 * block..(c1 * block).min(s), SliceKind::Full));
    }
    shared(s, slices)
}

/// `per_head` patterns [causal,sliding_window_causal]: MoA-style heterogeneous heads. The list gives
/// one pattern per head group (G = its length; G must divide the number of query heads, checked by
/// `HeadMasks::check_heads` when heads are known); group g covers heads `[g·Hq/G, (g+1)·Hq/G)`. Every
/// other key is passed to each group whose pattern declares it (so `window=256` reaches the sliding
/// windows and `doc_lens=` the document patterns, which then share the same documents); a key no group
/// takes is an error. `per_head` cannot nest. Not in LC/MA.
fn per_head(s: usize, p: &Params) -> Result<HeadMasks, MaskError> {
    let list = p.get("patterns").unwrap_or(PATTERNS_KEY.default);
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|x| !x.is_empty()).collect();
    if names.is_empty() {
        return Err(MaskError::bad("patterns", "needs at least one pattern name"));
    }
    let mut used = std::collections::BTreeSet::new();
    let mut groups = Vec::with_capacity(names.len());
    for name in &names {
        if *name == "per_head" {
            return Err(MaskError::bad("patterns", "per_head cannot contain per_head"));
        }
        let pat = find_pattern(name).map_err(|_| MaskError::bad("patterns", format!("unknown pattern `{name}` (see `attnbench list`)")))?;
        let mut sub = Params::new();
        for (k, v) in &p.0 {
            if pat.params.iter().any(|ps| ps.key == k) {
                sub = sub.set(k, v);
                used.insert(k.as_str());
            }
        }
        let hm = build_pattern(name, s, &sub)?;
        groups.push(hm.groups.into_iter().next().expect("non-nested patterns have one group"));
    }
    if let Some(k) = p.0.keys().find(|k| k.as_str() != "patterns" && !used.contains(k.as_str())) {
        return Err(MaskError::bad(k, format!("none of the per_head patterns ({}) takes it", names.join(", "))));
    }
    Ok(HeadMasks { groups })
}

#[cfg(test)]
// The predicates mirror DESIGN.md's wording literally, so they are not simplified.
#[allow(clippy::nonminimal_bool, clippy::redundant_closure, clippy::collapsible_match)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type Pred = Box<dyn Fn(usize, usize) -> bool>;

    /// doc(i) and s(i) tables for a list of lengths.
    fn doc_tables(lens: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let (mut doc, mut start) = (Vec::new(), Vec::new());
        let mut at = 0;
        for (d, &l) in lens.iter().enumerate() {
            for _ in 0..l {
                doc.push(d);
                start.push(at);
            }
            at += l;
        }
        (doc, start)
    }

    fn num(p: &Params, key: &str, default: usize) -> usize {
        p.get(key).map(|v| v.parse().unwrap()).unwrap_or(default)
    }

    /// Each pattern's rule written straight from DESIGN.md ("Zoo"), independently of the slice
    /// construction. Only the document lengths come from the same helper (they are an input).
    fn predicate(name: &str, s: usize, p: &Params) -> Pred {
        let si = s as i64;
        match name {
            "full" => Box::new(|_, _| true),
            "causal" => Box::new(|i, j| j <= i),
            "sliding_window" => {
                let (l, r) = (num(p, "window_left", 1024) as i64, num(p, "window_right", 1024) as i64);
                Box::new(move |i, j| {
                    let (i, j) = (i as i64, j as i64);
                    i - l <= j && j <= i + r
                })
            }
            "sliding_window_causal" => {
                let w = num(p, "window", 1024) as i64;
                Box::new(move |i, j| {
                    let (i, j) = (i as i64, j as i64);
                    i - w <= j && j <= i
                })
            }
            "global_sliding_window" => {
                let (g, w) = (num(p, "global", 64), num(p, "window", 1024));
                Box::new(move |i, j| i.abs_diff(j) <= w || j < g || i < g)
            }
            "global_sliding_window_longca" => {
                let w = num(p, "window", 1024).min(s) as i64;
                Box::new(move |i, j| {
                    let (i, j) = (i as i64, j as i64);
                    (j < w && j <= i - (si - w)) || (i < w && w <= j && j <= i + si - w) || (i >= w && j >= w && (i - j).abs() <= w)
                })
            }
            "prefix_lm_causal" => {
                let pre = num(p, "prefix", s / 4);
                Box::new(move |i, j| j <= i || j < pre)
            }
            "block_sparse" | "per_head" => unreachable!("tested separately"),
            _ => {
                let lens = if name.ends_with("_long") { long_doc_lengths(s, p).unwrap() } else { doc_lengths(s, p).unwrap() };
                let n = lens.len();
                let (doc, st) = doc_tables(&lens);
                let same = move |i: usize, j: usize| doc[i] == doc[j];
                let d = doc_tables(&lens).0;
                match name {
                    "full_document" | "full_document_long" => Box::new(move |i, j| same(i, j)),
                    "causal_document" | "causal_document_long" => Box::new(move |i, j| same(i, j) && j <= i),
                    "prefix_lm_document" => {
                        let pre = num(p, "prefix", (s / 4).min(1024));
                        Box::new(move |i, j| same(i, j) && (j <= i || j - st[j] < pre))
                    }
                    "share_question" => Box::new(move |i, j| (same(i, j) && j <= i) || (d[j] == 0 && d[i] != 0)),
                    "causal_blockwise" => Box::new(move |i, j| (same(i, j) && j <= i) || (d[i] == n - 1 && j <= i)),
                    "block_causal_document" => {
                        let b = num(p, "block", 1024);
                        Box::new(move |i, j| same(i, j) && j < st[i] + ((i - st[i]) / b + 1) * b)
                    }
                    other => panic!("no predicate for {other}"),
                }
            }
        }
    }

    fn random_lens(rng: &mut ChaCha8Rng, s: usize) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut left = s;
        while left > 0 {
            let l = if rng.gen_bool(0.3) { 1 } else { rng.gen_range(1..=left) }.min(left);
            lens.push(l);
            left -= l;
        }
        lens
    }

    /// Random but valid parameters for `name` at `s`, including the edge cases (window 0 and > S,
    /// prefix 0 and S, 1-token documents, blocks larger than S).
    fn random_params(rng: &mut ChaCha8Rng, name: &str, s: usize) -> Params {
        let mut p = Params::new();
        let pat = find_pattern(name).unwrap();
        let pick = |rng: &mut ChaCha8Rng, hi: usize| -> usize {
            match rng.gen_range(0..5) {
                0 => 0,
                1 => hi,
                2 => hi + 7,
                _ => rng.gen_range(0..=hi),
            }
        };
        for spec in pat.params {
            match spec.key {
                "window" | "window_left" | "window_right" | "global" => p = p.set(spec.key, pick(rng, s)),
                "prefix" => p = p.set("prefix", pick(rng, s)),
                "block" => p = p.set("block", pick(rng, s).max(1)),
                "seed" => p = p.set("seed", rng.gen_range(0..1000u64)),
                "doc_lens" => {
                    if rng.gen_bool(0.8) {
                        let lens = random_lens(rng, s);
                        let txt: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
                        p = p.set("doc_lens", txt.join(","));
                    }
                }
                "docs" if p.get("doc_lens").is_none() && !name.ends_with("_long") => {
                    let names = ["auto", "pile", "varlen_short", "prolong64k"];
                    p = p.set("docs", names[rng.gen_range(0..names.len())]);
                }
                _ => {}
            }
        }
        // Sometimes fall back to a default by dropping the first key.
        if rng.gen_bool(0.2) {
            if let Some(k) = p.0.keys().next().cloned() {
                p.0.remove(&k);
            }
        }
        p
    }

    fn brute(s: usize, pred: &Pred) -> Vec<bool> {
        (0..s * s).map(|x| pred(x / s, x % s)).collect()
    }

    const SIZES: [usize; 9] = [1, 2, 3, 5, 8, 17, 64, 100, 131];

    fn predicate_patterns() -> impl Iterator<Item = &'static Pattern> {
        PATTERNS.iter().filter(|p| p.name != "block_sparse" && p.name != "per_head")
    }

    #[test]
    fn every_pattern_matches_its_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for pat in predicate_patterns() {
            for &s in &SIZES {
                for _ in 0..6 {
                    let p = random_params(&mut rng, pat.name, s);
                    let hm = build_pattern(pat.name, s, &p).unwrap_or_else(|e| panic!("{} {s} {p}: {e}", pat.name));
                    let m = &hm.groups[0];
                    let want = brute(s, &predicate(pat.name, s, &p));
                    let area = want.iter().filter(|&&b| b).count() as u64;
                    assert_eq!(m.area(), area, "{} S={s} {p}", pat.name);
                    assert_eq!(m.to_dense(), want, "{} S={s} {p}", pat.name);
                    assert_eq!(m.row_counts().iter().sum::<u64>(), area);
                }
            }
        }
    }

    #[test]
    fn long_document_patterns_at_realistic_size() {
        // 40 % / 60 % split and the 8K–30K long documents need S well above 8K.
        for name in ["full_document_long", "causal_document_long"] {
            for s in [20_000usize, 70_000] {
                let p = Params::new().set("seed", 5);
                let lens = long_doc_lengths(s, &p).unwrap();
                assert_eq!(lens.iter().sum::<usize>(), s);
                let m = build_pattern(name, s, &p).unwrap().groups.remove(0);
                let per_doc: u64 = lens.iter().map(|&l| l as u64).map(|l| if name.starts_with("full") { l * l } else { l * (l + 1) / 2 }).sum();
                assert_eq!(m.area(), per_doc);
                assert_eq!(m.slices().len(), lens.len());
                // at least the long part: lengths in 8192..=30720 cover ≥ 60 % minus one cut document
                let long: usize = lens.iter().filter(|&&l| (8192..=30720).contains(&l)).sum();
                assert!(long + 30720 >= s - s * 2 / 5, "{name} {s}: {long}");
            }
        }
    }

    #[test]
    fn sub_block_equals_dense_submatrix_on_every_pattern() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for pat in PATTERNS {
            for &s in &[1usize, 7, 33, 90] {
                let p = if pat.name == "per_head" {
                    Params::new()
                        .set("patterns", "causal_document,sliding_window,block_sparse")
                        .set("window_left", rng.gen_range(0..=s))
                        .set("seed", rng.gen_range(0..100u64))
                } else if pat.name == "block_sparse" {
                    Params::new().set("seed", rng.gen_range(0..100u64)).set("density", rng.gen_range(0.01..=1.0))
                } else {
                    random_params(&mut rng, pat.name, s)
                };
                let p = if pat.name == "block_sparse" { p.set("block", rng.gen_range(1..=s + 2)) } else { p };
                for m in build_pattern(pat.name, s, &p).unwrap().groups {
                    let dense = m.to_dense();
                    for _ in 0..25 {
                        let (a, b) = (rng.gen_range(0..=s), rng.gen_range(0..=s));
                        let (c, d) = (rng.gen_range(0..=s), rng.gen_range(0..=s));
                        let (q, k) = (a.min(b)..a.max(b), c.min(d)..c.max(d));
                        let sub = m.sub_block(q.clone(), k.clone());
                        // valid: inside the block and non-overlapping
                        let checked = Mask::rect(sub.seqlen_q, sub.seqlen_k, sub.slices().to_vec()).unwrap();
                        let mut want = 0u64;
                        for i in q.clone() {
                            for j in k.clone() {
                                let v = dense[i * s + j];
                                want += v as u64;
                                assert_eq!(sub.contains(i - q.start, j - k.start), v, "{} {p} {q:?} {k:?}", pat.name);
                            }
                        }
                        assert_eq!(checked.area(), want, "{} S={s} {p} {q:?} {k:?}", pat.name);
                    }
                }
            }
        }
    }

    #[test]
    fn block_sparsity_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for pat in PATTERNS {
            for &s in &[5usize, 40, 77] {
                let p = if matches!(pat.name, "block_sparse" | "per_head") { Params::new() } else { random_params(&mut rng, pat.name, s) };
                let m = build_pattern(pat.name, s, &p).unwrap().groups.remove(0);
                let dense = m.to_dense();
                for (bq, bk) in [(1, 1), (4, 4), (8, 3), (16, 16), (100, 7)] {
                    let (nq, nk) = (s.div_ceil(bq), s.div_ceil(bk));
                    let mut hit = 0;
                    for tq in 0..nq {
                        for tk in 0..nk {
                            let any = (tq * bq..((tq + 1) * bq).min(s)).any(|i| (tk * bk..((tk + 1) * bk).min(s)).any(|j| dense[i * s + j]));
                            hit += any as usize;
                        }
                    }
                    let want = hit as f64 / (nq * nk) as f64;
                    assert!((m.block_sparsity(bq, bk) - want).abs() < 1e-12, "{} {p} {bq}x{bk}", pat.name);
                }
            }
        }
    }

    #[test]
    fn block_sparse_tiles() {
        for (s, block, density, seed) in [(100usize, 10usize, 0.3, 1u64), (64, 8, 1.0, 2), (50, 7, 0.01, 3), (5, 128, 0.5, 4), (129, 16, 0.55, 9)] {
            let p = Params::new().set("block", block).set("density", density).set("seed", seed);
            let m = build_pattern("block_sparse", s, &p).unwrap().groups.remove(0);
            let dense = m.to_dense();
            let n = s.div_ceil(block);
            let mut on = 0;
            for tq in 0..n {
                for tk in 0..n {
                    let cells: Vec<bool> = (tq * block..((tq + 1) * block).min(s))
                        .flat_map(|i| (tk * block..((tk + 1) * block).min(s)).map(move |j| (i, j)))
                        .map(|(i, j)| dense[i * s + j])
                        .collect();
                    let all = cells.iter().all(|&b| b);
                    assert!(all || cells.iter().all(|&b| !b), "tile ({tq},{tk}) partly on");
                    if tq == tk {
                        assert!(all, "diagonal tile {tq} off");
                    }
                    on += all as usize;
                }
            }
            let want = ((density * (n * n) as f64).round() as usize).clamp(n, n * n);
            assert_eq!(on, want, "S={s} block={block} density={density}");
            assert!((m.block_sparsity(block, block) - want as f64 / (n * n) as f64).abs() < 1e-12);
            assert_eq!(m, build_pattern("block_sparse", s, &p).unwrap().groups[0], "same seed, same tiles");
        }
        let a = build_pattern("block_sparse", 256, &Params::new().set("block", 16).set("seed", 1)).unwrap();
        let b = build_pattern("block_sparse", 256, &Params::new().set("block", 16).set("seed", 2)).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn per_head_groups_are_the_named_patterns() {
        let p = Params::new().set("patterns", "causal,sliding_window_causal,causal_document").set("window", 5).set("doc_lens", "10,20,10");
        let hm = build_pattern("per_head", 40, &p).unwrap();
        assert_eq!(hm.groups.len(), 3);
        assert_eq!(hm.groups[0], build_pattern("causal", 40, &Params::new()).unwrap().groups[0]);
        assert_eq!(hm.groups[1], build_pattern("sliding_window_causal", 40, &Params::new().set("window", 5)).unwrap().groups[0]);
        assert_eq!(hm.groups[2], build_pattern("causal_document", 40, &Params::new().set("doc_lens", "10,20,10")).unwrap().groups[0]);
        assert!(hm.check_heads(6).is_ok());
        assert!(hm.check_heads(8).is_err());
        let d = build_pattern("per_head", 100, &Params::new()).unwrap();
        assert_eq!(d.groups.len(), 2, "default causal,sliding_window_causal");
        // A key no group takes, nesting and unknown names are errors naming the key.
        let e = build_pattern("per_head", 40, &Params::new().set("patterns", "causal").set("window", 3)).unwrap_err();
        assert!(e.to_string().contains("`window`"), "{e}");
        let e = build_pattern("per_head", 40, &Params::new().set("patterns", "causal,per_head")).unwrap_err();
        assert!(e.to_string().contains("`patterns`"), "{e}");
        let e = build_pattern("per_head", 40, &Params::new().set("patterns", "causal,nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn sampled_documents_follow_the_sampler() {
        for (docs, s) in [("pile", 3000usize), ("auto", 5000), ("auto", 20000), ("varlen_long", 9000)] {
            let p = Params::new().set("docs", docs).set("seed", 11);
            let m = build_pattern("full_document", s, &p).unwrap().groups.remove(0);
            let table = if docs == "auto" { doclen::auto_corpus(s) } else { docs };
            let lens = doclen::sample_lengths(&doclen::histogram(table).unwrap(), s, &mut doclen::rng(11));
            let got: Vec<usize> = m.slices().iter().map(|x| x.q_len()).collect();
            assert_eq!(got, lens, "{docs} {s}");
        }
        // default seed is 42 and deterministic
        let a = build_pattern("causal_document", 4096, &Params::new()).unwrap();
        let b = build_pattern("causal_document", 4096, &Params::new().set("seed", 42)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, build_pattern("causal_document", 4096, &Params::new().set("seed", 43)).unwrap());
    }

    fn err(name: &str, s: usize, kv: &[&str]) -> String {
        let p = Params::parse_kv(kv).unwrap();
        let e = build_pattern(name, s, &p).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    /// Length parameters wider than the sequence saturate, the same way for windows and prefixes.
    #[test]
    fn length_parameters_wider_than_the_sequence_saturate() {
        let area = |name: &str, kv: &[&str]| build_pattern(name, 100, &Params::parse_kv(kv).unwrap()).unwrap().mean_area();
        assert_eq!(area("sliding_window", &["window_left=1000", "window_right=1000"]), 10000.0);
        assert_eq!(area("sliding_window_causal", &["window=1000"]), area("causal", &[]));
        assert_eq!(area("global_sliding_window", &["global=1000"]), 10000.0);
        assert_eq!(area("prefix_lm_causal", &["prefix=1000"]), 10000.0);
        assert_eq!(area("prefix_lm_causal", &["prefix=1000"]), area("prefix_lm_causal", &["prefix=100"]));
        assert_eq!(area("prefix_lm_document", &["prefix=1000", "doc_lens=50,50"]), area("full_document", &["doc_lens=50,50"]));
        assert_eq!(area("block_causal_document", &["block=1000", "doc_lens=50,50"]), area("full_document", &["doc_lens=50,50"]));
    }

    #[test]
    fn bad_parameters_are_one_line_errors_naming_the_key() {
        assert!(err("sliding_window", 100, &["window_left=-5"]).contains("`window_left`"));
        assert!(err("sliding_window_causal", 100, &["window=x"]).contains("`window`"));
        assert!(err("prefix_lm_causal", 100, &["prefix=-1"]).contains("`prefix`"));
        assert!(err("prefix_lm_document", 100, &["prefix=x", "doc_lens=50,50"]).contains("`prefix`"));
        assert!(err("block_causal_document", 100, &["block=0", "doc_lens=50,50"]).contains("`block`"));
        assert!(err("causal", 100, &["window=3"]).contains("`window`"));
        assert!(err("causal_document", 100, &["doc_lens=50,49"]).contains("`doc_lens`"));
        assert!(err("causal_document", 100, &["doc_lens=50,0,50"]).contains("`doc_lens`"));
        assert!(err("causal_document", 100, &["doc_lens=50,50", "docs=pile"]).contains("`doc_lens`"));
        assert!(err("causal_document", 100, &["docs=wiki"]).contains("`docs`"));
        assert!(err("block_sparse", 100, &["density=0"]).contains("`density`"));
        assert!(err("block_sparse", 100, &["density=1.5"]).contains("`density`"));
        assert!(err("block_sparse", 100, &["block=0"]).contains("`block`"));
        // Issue 30: bounded before allocating (a 17 GB allocation at 1M tokens, a panic at 2^31).
        assert!(err("block_sparse", 1 << 20, &["block=16"]).contains("at most 4194304"));
        assert!(err("block_sparse", 1 << 31, &[]).contains("`block`"));
        assert!(err("block_causal_document", 100, &["block=0"]).contains("`block`"));
        assert!(err("full_document_long", 100, &["doc_lens=100"]).contains("`doc_lens`"));
        assert!(err("nope", 100, &[]).contains("nope"));
        assert!(err("causal", 0, &[]).contains("`seqlen`"));
        assert!(err("full", MAX_SEQLEN + 1, &[]).contains("`seqlen`"));
        assert_eq!(build_pattern("full", MAX_SEQLEN, &Params::new()).unwrap().groups[0].area(), 1 << 62);
    }

    #[test]
    fn sliding_windows_use_a_constant_number_of_slices() {
        for s in [1usize, 10, 5000, 1 << 20] {
            let m = build_pattern("sliding_window", s, &Params::new()).unwrap();
            assert!(m.groups[0].slices().len() <= 3);
            let m = build_pattern("global_sliding_window", s, &Params::new()).unwrap();
            assert!(m.groups[0].slices().len() <= 5);
        }
        // exact closed form: causal band of window w at S ≥ w: (w+1)·S − w(w+1)/2
        let (s, w) = (1u64 << 20, 1024u64);
        let m = build_pattern("sliding_window_causal", s as usize, &Params::new()).unwrap();
        assert_eq!(m.groups[0].area(), (w + 1) * s - w * (w + 1) / 2);
    }

    #[test]
    fn million_tokens_ten_thousand_documents() {
        let s = 1usize << 20;
        let n = 10_000;
        let lens: Vec<String> = (0..n).map(|d| (s / n + usize::from(d < s % n)).to_string()).collect();
        let p = Params::new().set("doc_lens", lens.join(","));
        let m = build_pattern("causal_document", s, &p).unwrap().groups.remove(0);
        assert_eq!(m.slices().len(), n);
        let want: u64 = (0..n).map(|d| (s / n + usize::from(d < s % n)) as u64).map(|l| l * (l + 1) / 2).sum();
        assert_eq!(m.area(), want);
    }
}
