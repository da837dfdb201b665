//! The CAB tables of a group: CAB's efficiency lengths (time and memory, in tokens, or
//! "always"/"never"/"–" with the reason), then the scaling exponents under their own title.
//! Lengths are plain integers (CAB rounds to the token), so `--format csv` gives numbers.

use super::{BackendFit, CabGroup, EffLen, PowerLaw, Quantity};
use crate::report::table::{Cell, Table, TableRow};

/// `1877` for a length, else the word; and the note that goes with it.
fn length_and_note(q: &Quantity, baseline_row: bool, lo: f64, hi: f64) -> (String, String) {
    if baseline_row {
        let note = match &q.cab_fit {
            Some(f) => format!("quadratic fit, R² {:.3}, {} lengths", f.r2, f.n),
            None if q.points.is_empty() => "no ok rows".into(),
            None => format!("{} ok length(s): a quadratic needs 3", q.points.len()),
        };
        return ("(baseline)".into(), note);
    }
    let fit = q.cab_fit.as_ref().map(|f| format!("linear fit, R² {:.3}, {} lengths", f.r2, f.n)).unwrap_or_default();
    match &q.efficiency_length {
        None => ("–".into(), String::new()),
        Some(EffLen::Tokens(s)) => {
            let range = format!("{}–{}", lo as u64, hi as u64);
            let where_ = if *s < lo {
                format!("below the measured lengths ({range}): extrapolated")
            } else if *s > hi {
                format!("beyond the measured lengths ({range}): extrapolated")
            } else {
                "within the measured lengths".to_string()
            };
            (format!("{s:.0}"), format!("{fit}; {where_}"))
        }
        Some(EffLen::Always(why)) => ("always".into(), format!("{fit}; {why}")),
        Some(EffLen::Never(why)) => ("never".into(), format!("{fit}; {why}")),
        Some(EffLen::Unknown(why)) => ("–".into(), why.clone()),
    }
}

fn first_below(b: &BackendFit, q: &Quantity) -> String {
    if b.is_baseline {
        "(baseline)".into()
    } else {
        q.first_below.map(|s| s.to_string()).unwrap_or_else(|| "–".into())
    }
}

fn fmt_power_law(f: &Option<PowerLaw>, unit: &str) -> [String; 3] {
    match f {
        None => ["–".into(), "–".into(), "–".into()],
        Some(f) => [format!("{:.3e} {unit}", f.a), format!("{:.2}", f.b), format!("{:.3}", f.r2)],
    }
}

/// Per group: the CAB efficiency-length table, then the scaling-exponent table.
pub fn tables(groups: &[CabGroup]) -> Vec<Table> {
    let mut out = Vec::new();
    for g in groups {
        let (lo, hi) = g.len_range();
        let rows = g
            .backends
            .iter()
            .map(|b| {
                let (tl, tn) = length_and_note(&b.time, b.is_baseline, lo, hi);
                let (ml, mn) = length_and_note(&b.mem, b.is_baseline, lo, hi);
                let cells = [tl, tn, ml, mn, first_below(b, &b.time), first_below(b, &b.mem)];
                TableRow { label: b.backend.clone(), cells: cells.into_iter().map(Cell::Text).collect() }
            })
            .collect();
        out.push(Table {
            title: format!("{} · {} · CAB efficiency length vs `{}`", g.key.pattern(), g.pass, g.baseline),
            subtitle: format!(
                "{} — CAB's definition: `{}` fitted with a quadratic in S over all its lengths, each backend with a line (time: without its shortest \
                 length); the efficiency length (tokens) is the larger crossing, beyond which the backend stays cheaper. Memory: {}",
                g.key.setup(),
                g.baseline,
                g.mem_source
            ),
            corner: "backend".into(),
            columns: [
                "time efficiency length (tokens)",
                "time note",
                "memory efficiency length (tokens)",
                "memory note",
                "first faster (measured, tokens)",
                "first smaller (measured, tokens)",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            rows,
            ..Table::default()
        });
        let rows = g
            .backends
            .iter()
            .map(|b| {
                let cells: Vec<String> = fmt_power_law(&b.time.power_law, "ms").into_iter().chain(fmt_power_law(&b.mem.power_law, "B")).collect();
                TableRow { label: b.backend.clone(), cells: cells.into_iter().map(Cell::Text).collect() }
            })
            .collect();
        out.push(Table {
            title: format!("{} · {} · scaling exponents (power-law fits, not CAB's efficiency length)", g.key.pattern(), g.pass),
            subtitle: format!("{} — y = a·S^b by least squares on log-log axes; b is the growth exponent (1 linear, 2 quadratic)", g.key.setup()),
            corner: "backend".into(),
            columns: ["time a", "time b", "time R²", "mem a", "mem b", "mem R²"].into_iter().map(String::from).collect(),
            rows,
            ..Table::default()
        });
    }
    out
}
