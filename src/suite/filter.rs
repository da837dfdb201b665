//! Case filters: the suite's `[[include]]`/`[[exclude]]` tables and the CLI's `--filter EXPR`.
//!
//! `--filter` syntax: comma-separated conditions, all of which must hold. A condition is
//! `field OP value` with OP one of `=`, `!=`, `<`, `<=`, `>`, `>=`, `~` (substring). Fields: backend,
//! strategy, pattern (or mask), pass, dtype, device, heads, seqlen, batch, head_dim, world_size, kind.
//! Example: `--filter 'backend~sdpa,seqlen<=4096,pass=fwd'`.

use super::schema::CaseFilter;
use crate::case::Case;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

#[derive(Debug, Clone)]
struct Cond {
    field: String,
    op: Op,
    value: String,
}

/// A conjunction of conditions on case fields.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    conds: Vec<Cond>,
}

const FIELDS: &[&str] = &["backend", "strategy", "pattern", "mask", "pass", "dtype", "device", "heads", "seqlen", "batch", "head_dim", "world_size", "kind"];
const NUMERIC: &[&str] = &["seqlen", "batch", "head_dim", "world_size"];

fn field(case: &Case, name: &str) -> String {
    match name {
        "backend" => case.backend.clone(),
        "strategy" => case.strategy.clone(),
        "pattern" | "mask" => case.pattern.clone(),
        "pass" => case.pass.to_string(),
        "dtype" => case.dtype.to_string(),
        "device" => case.device.to_string(),
        "heads" => case.heads.to_string(),
        "seqlen" => case.seqlen.to_string(),
        "batch" => case.batch.to_string(),
        "head_dim" => case.head_dim.to_string(),
        "world_size" => case.world_size.to_string(),
        "kind" => case.kind.to_string(),
        _ => String::new(),
    }
}

impl Filter {
    /// Parses a `--filter` expression; the error names the offending condition.
    pub fn parse(expr: &str) -> Result<Filter, String> {
        let mut conds = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // Longest operators first so `<=` is not read as `<`.
            let ops = [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt), ("~", Op::Contains)];
            let Some((pos, sym, op)) =
                ops.iter().filter_map(|(s, o)| part.find(s).map(|p| (p, *s, *o))).min_by_key(|(p, s, _)| (*p, std::cmp::Reverse(s.len())))
            else {
                return Err(format!("filter condition `{part}`: expected field OP value (OP: = != < <= > >= ~)"));
            };
            let f = part[..pos].trim().to_string();
            let value = part[pos + sym.len()..].trim().to_string();
            if !FIELDS.contains(&f.as_str()) {
                return Err(format!("filter condition `{part}`: unknown field `{f}` (fields: {})", FIELDS.join(", ")));
            }
            let ordered = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
            if ordered && !NUMERIC.contains(&f.as_str()) {
                return Err(format!("filter condition `{part}`: `{sym}` needs a numeric field ({})", NUMERIC.join(", ")));
            }
            if NUMERIC.contains(&f.as_str()) && op != Op::Contains && value.parse::<u64>().is_err() {
                return Err(format!("filter condition `{part}`: `{f}` needs an integer value"));
            }
            conds.push(Cond { field: f, op, value });
        }
        Ok(Filter { conds })
    }

    pub(crate) fn from_case_filter(c: &CaseFilter) -> Filter {
        let mut conds = Vec::new();
        let mut eq = |f: &str, v: &Option<String>| {
            if let Some(v) = v {
                conds.push(Cond { field: f.into(), op: Op::Eq, value: v.clone() });
            }
        };
        eq("backend", &c.backend);
        eq("strategy", &c.strategy);
        eq("pattern", &c.pattern);
        eq("pass", &c.pass);
        eq("dtype", &c.dtype);
        eq("heads", &c.heads);
        let mut num = |f: &str, op: Op, v: Option<i64>| {
            if let Some(v) = v {
                conds.push(Cond { field: f.into(), op, value: v.to_string() });
            }
        };
        num("seqlen", Op::Eq, c.seqlen);
        num("seqlen", Op::Ge, c.seqlen_min);
        num("seqlen", Op::Le, c.seqlen_max);
        num("world_size", Op::Eq, c.world_size);
        Filter { conds }
    }

    pub fn matches(&self, case: &Case) -> bool {
        self.conds.iter().all(|c| {
            let v = field(case, &c.field);
            if NUMERIC.contains(&c.field.as_str()) && c.op != Op::Contains {
                let (a, b) = (v.parse::<i64>().unwrap_or(0), c.value.parse::<i64>().unwrap_or(0));
                return match c.op {
                    Op::Eq => a == b,
                    Op::Ne => a != b,
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    Op::Ge => a >= b,
                    Op::Contains => unreachable!(),
                };
            }
            match c.op {
                Op::Eq => v == c.value,
                Op::Ne => v != c.value,
                Op::Contains => v.contains(&c.value),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;

    fn case(backend: &str, seqlen: usize) -> Case {
        Case::kernel(backend, "causal", Default::default(), seqlen, HeadLayout { q: 8, kv: 2 }, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu)
    }

    #[test]
    fn parse_and_match() {
        let f = Filter::parse("backend~sdpa, seqlen<=2048,pass=fwd").unwrap();
        assert!(f.matches(&case("sdpa-flash", 2048)));
        assert!(!f.matches(&case("sdpa-flash", 4096)));
        assert!(!f.matches(&case("naive", 1024)));
        assert!(Filter::parse("seqlen!=1024").unwrap().matches(&case("naive", 2048)));
        assert!(Filter::parse("").unwrap().matches(&case("naive", 1)));
    }

    #[test]
    fn parse_errors_name_the_condition() {
        assert!(Filter::parse("colour=red").unwrap_err().contains("unknown field `colour`"));
        assert!(Filter::parse("backend<3").unwrap_err().contains("numeric"));
        assert!(Filter::parse("seqlen=big").unwrap_err().contains("integer"));
        assert!(Filter::parse("backend").unwrap_err().contains("expected field OP value"));
    }
}
