//! The LaTeX tables compile (issue 20): `table --format latex` output of a committed run
//! (tests/fixtures/latex_run: every mark X/E/W/T/!, bold bests, a 13-column pivot, a mask whose
//! parameters hold `_ % & # ~ ^ { } $ \`) is `\input` into a document and built with pdflatex;
//! `--standalone` documents (every metric, and the CAB tables) build as they are. pdftotext reads the
//! PDFs back. Needs pdflatex and pdftotext: `launch/setup` installs them (texlive-latex-base,
//! texlive-latex-recommended, poppler-utils).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

fn attnbench(args: &[&str], csv: &Path) -> String {
    let out = bin().args(args).arg(csv).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Builds `name.tex` in `dir` with pdflatex; returns the log. Fails the test on any error, an
/// overfull box (a table wider than the page) or a character the fonts lack.
fn pdflatex(dir: &Path, name: &str) -> String {
    let out = Command::new("pdflatex")
        .args(["-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape"])
        .arg(format!("{name}.tex"))
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("pdflatex not runnable ({e}): run launch/setup (texlive-latex-base, texlive-latex-recommended)"));
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    assert!(
        out.status.success(),
        "pdflatex failed on {name}.tex:\n{}",
        log.lines().filter(|l| l.starts_with('!') || l.starts_with("l.")).collect::<Vec<_>>().join("\n")
    );
    for bad in ["Overfull \\hbox", "Missing character", "Undefined control sequence", "LaTeX Error"] {
        assert!(!log.contains(bad), "{name}.log has `{bad}`");
    }
    assert!(dir.join(format!("{name}.pdf")).is_file());
    log
}

fn pdftotext(pdf: &Path) -> String {
    let out = Command::new("pdftotext").args(["-layout"]).arg(pdf).arg("-").output().expect("pdftotext (poppler-utils, launch/setup)");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn latex_tables_of_a_committed_run_compile() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("latex_run/results.csv");
    let tables = attnbench(&["table", "--format", "latex"], &csv);
    // What the source must have before any TeX runs.
    assert_eq!(tables.matches("\\begin{table}").count(), 4, "2 patterns × 2 passes");
    for mark in [" X ", " E ", " W ", " T ", " ! "] {
        assert!(tables.contains(&format!("&{mark}&")) || tables.contains(&format!("&{mark}\\\\")), "mark{mark}in the tables");
    }
    assert!(tables.contains("\\textbf{"), "bold bests");
    assert!(tables.contains("\\resizebox{\\ifdim\\width>\\linewidth"), "the 13-column pivot is fitted to the line");
    assert!(tables.contains("docs=pile\\_v2;tag=50\\%\\&A\\#1\\textasciitilde{}x\\textasciicircum{}2\\{y\\}\\$z\\textbackslash{}w"), "{tables}");
    assert!(tables.contains("TFLOPS ($10^{12}$ FLOP/s) by sequence length S"), "unit in the header");
    assert!(tables.contains("NVIDIA H100 80GB HBM3, bf16, 32 query / 8 key-value heads, D = 128; timing: cuda-event-l2flush."), "caption");
    assert!(tables.is_ascii());
    std::fs::write(dir.path().join("tables.tex"), &tables).unwrap();
    std::fs::write(
        dir.path().join("paper.tex"),
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\begin{document}\nSome text.\n\\input{tables.tex}\n\\end{document}\n",
    )
    .unwrap();
    pdflatex(dir.path(), "paper");
    let text = pdftotext(&dir.path().join("paper.pdf"));
    assert_eq!(text.matches("Table ").count(), 4, "{text}");
    assert!(text.contains("50%&A#1") && text.contains("$z\\w"), "special characters printed as themselves: {text}");
    assert!(text.contains("timing: cuda-event-l2flush"), "{text}");
    // A row of the wide table, every column present: the four marks and the per-column digits.
    let naive = text.lines().find(|l| l.trim_start().starts_with("naive")).unwrap();
    assert_eq!(naive.split_whitespace().collect::<Vec<_>>(), ["naive", "3.33", "6.00", "W", "15.0", "20.0", "24.0", "E", "E", "E", "E", "E", "E", "E"]);
}

#[test]
fn standalone_documents_compile_for_every_metric_and_cab() {
    let dir = tempfile::tempdir().unwrap();
    for metric in ["tflops", "ms", "mem", "mfu"] {
        let tex = attnbench(&["table", "--format", "latex", "--standalone", "--metric", metric], &fixture("latex_run/results.csv"));
        assert!(tex.starts_with("% attnbench") && tex.contains("\\documentclass") && tex.trim_end().ends_with("\\end{document}"));
        let name = format!("standalone-{metric}");
        std::fs::write(dir.path().join(format!("{name}.tex")), &tex).unwrap();
        pdflatex(dir.path(), &name);
        let text = pdftotext(&dir.path().join(format!("{name}.pdf")));
        let unit = match metric {
            "tflops" => "TFLOPS",
            "ms" => "median time (ms)",
            "mem" => "peak memory (",
            _ => "MFU (%)",
        };
        assert!(text.contains(unit), "{metric}: {text}");
    }
    // CAB's tables: free text with R², ≤, ∝ and backticks.
    let tex = attnbench(&["table", "--cab", "--format", "latex", "--standalone", "--baseline", "vanilla"], &fixture("cab_abc/results.csv"));
    std::fs::write(dir.path().join("cab.tex"), &tex).unwrap();
    pdflatex(dir.path(), "cab");
    let text = pdftotext(&dir.path().join("cab.pdf"));
    assert!(text.contains("1877") && text.contains("70"), "{text}");
    // --standalone is a LaTeX option.
    let out = bin().args(["table", "--standalone"]).arg(fixture("latex_run/results.csv")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
