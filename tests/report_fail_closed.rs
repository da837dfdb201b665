//! Reports fail closed (issue 17, item 6), through the real binary: an impossible number in a CSV is
//! an error naming the file, the line and the column (exit 2) in `table`, `plot`, `compare` and
//! `report`; a comparison that checks nothing is not a pass; an empty run is not "every case
//! passed"; `plot --out FILE` says what is wrong once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of `oom_bogus.csv` with the cell `column` of its data row `row` (0-based) replaced.
/// Returns (path, the file line of that row).
fn poisoned(dir: &Path, name: &str, row: usize, column: &str, value: &str) -> (PathBuf, usize) {
    let text = std::fs::read_to_string(fixture("oom_bogus.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let col = lines[0].split(',').position(|c| c == column).unwrap();
    let mut cells: Vec<String> = lines[row + 1].split(',').map(str::to_string).collect();
    cells[col] = value.to_string();
    lines[row + 1] = cells.join(",");
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, row + 2)
}

fn assert_bad_row(o: &Output, path: &Path, line: usize, column: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&path.display().to_string()) && err.contains(&format!("line {line}")) && err.contains(column), "{err}");
}

#[test]
fn impossible_numbers_are_errors_naming_the_row_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [("ms_median", "NaN"), ("ms_median", "-5"), ("tflops", "inf"), ("tflops_per_gpu", "-inf"), ("ms_p80", "-0.5"), ("tflops", "-1")];
    for (i, (column, value)) in cases.iter().enumerate() {
        let (csv, line) = poisoned(dir.path(), &format!("bad{i}.csv"), 1, column, value);
        let o = bin().arg("table").arg(&csv).output().unwrap();
        assert_bad_row(&o, &csv, line, column);
        // Every value through `table`; a time and a throughput through the other reports too (each
        // start of the binary loads libtorch: the test stays short).
        if !matches!(i, 0 | 5) {
            continue;
        }
        let o = bin().arg("plot").arg(&csv).arg("--out").arg(dir.path().join(format!("plots{i}"))).output().unwrap();
        assert_bad_row(&o, &csv, line, column);
        assert!(!dir.path().join(format!("plots{i}")).exists(), "nothing drawn from a bad CSV");
        // Either side of a comparison.
        let o = bin().arg("compare").arg(fixture("oom_bogus.csv")).arg(&csv).output().unwrap();
        assert_bad_row(&o, &csv, line, column);
        let o = bin().arg("compare").arg(&csv).arg(fixture("oom_bogus.csv")).output().unwrap();
        assert_bad_row(&o, &csv, line, column);
        let run = dir.path().join(format!("run{i}"));
        std::fs::create_dir(&run).unwrap();
        std::fs::copy(&csv, run.join("results.csv")).unwrap();
        let o = bin().arg("report").arg(&run).output().unwrap();
        assert_bad_row(&o, &run.join("results.csv"), line, column);
    }
    // The untouched file is accepted by all of them (the check is not a blanket refusal), and a
    // failed row's bogus but possible numbers stay accepted (they are never shown as numbers).
    let o = bin().arg("table").arg(fixture("oom_bogus.csv")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn header_only(path: &Path) {
    let text = std::fs::read_to_string(fixture("oom_bogus.csv")).unwrap();
    std::fs::write(path, text.lines().next().unwrap().to_string() + "\n").unwrap();
}

#[test]
fn a_comparison_that_checks_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (head, empty) = (dir.path().join("header.csv"), dir.path().join("empty.csv"));
    header_only(&head);
    std::fs::write(&empty, "").unwrap();
    let good = fixture("oom_bogus.csv");
    for base in [&head, &empty] {
        let o = bin().arg("compare").arg(base).arg(&good).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&base.display().to_string()) && err.contains("no rows") && err.contains("--allow-empty"), "{err}");
        // The new side too.
        let o = bin().arg("compare").arg(&good).arg(base).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let o = bin().arg("compare").arg(base).arg(&good).arg("--allow-empty").output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // Rows on both sides but no case ok in both: the same cases with a different run's case ids.
    let other = dir.path().join("other.csv");
    let text = std::fs::read_to_string(&good).unwrap().replace(",c00", ",x00");
    std::fs::write(&other, text).unwrap();
    let o = bin().arg("compare").arg(&good).arg(&other).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no case is ok in both runs") && err.contains("checked nothing"), "{err}");
    let o = bin().arg("compare").arg(&good).arg(&other).arg("--allow-empty").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A run compared with itself checks its ok cases: exit 0 without the flag.
    let o = bin().arg("compare").arg(&good).arg(&good).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn report_on_an_empty_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    header_only(&dir.path().join("results.csv"));
    let out = dir.path().join("r.html");
    let o = bin().arg("report").arg(dir.path()).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no rows"), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(!html.contains("every case ran and passed"), "an empty run passed nothing");
    assert!(html.contains("results.csv has no rows"), "the page says what it found");
}

#[test]
fn plot_out_file_is_one_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let o = bin().arg("plot").arg(fixture("oom_bogus.csv")).arg("--out").arg(&file).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches(&file.display().to_string()).count(), 1, "{err}");
    // An I/O error under --out (a folder that cannot be created) names the path once too.
    let o = bin().arg("plot").arg(fixture("oom_bogus.csv")).arg("--out").arg(file.join("sub")).output().unwrap();
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let os_error = err.rsplit(": ").next().unwrap().to_string();
    assert_eq!(err.matches(&os_error).count(), 1, "the OS error printed once: {err}");
}
