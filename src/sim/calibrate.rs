//! Calibration of the α–β link from `attnbench comm --json` output: the point-to-point (send/recv)
//! rows give (bytes, time) points, fitted with [`fit_link`].
//!
//! Expected JSON: `{"world_size": N, "device": "...", "results": [{"op", "bytes", "time_us",
//! "algbw_gbps", "busbw_gbps", "wrong"}, ...]}`. Rows with `wrong: true` are ignored. An op counts as
//! point-to-point when its name contains `send`, `recv`, `p2p` or `ping`.

use std::path::Path;

use serde::Deserialize;

use super::comm_model::{fit_link, CalibrationPoint, Link, Topology};

#[derive(Debug, Deserialize)]
pub struct CommReport {
    pub world_size: usize,
    #[serde(default)]
    pub device: String,
    pub results: Vec<CommResult>,
}

#[derive(Debug, Deserialize)]
pub struct CommResult {
    pub op: String,
    pub bytes: f64,
    pub time_us: f64,
    #[serde(default)]
    pub wrong: serde_json::Value,
}

impl CommResult {
    fn is_wrong(&self) -> bool {
        match &self.wrong {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
            _ => false,
        }
    }
}

fn is_p2p(op: &str) -> bool {
    let o = op.to_ascii_lowercase();
    ["send", "recv", "p2p", "ping"].iter().any(|k| o.contains(k))
}

/// The send/recv points of a report.
pub fn p2p_points(r: &CommReport) -> Vec<CalibrationPoint> {
    r.results
        .iter()
        .filter(|x| is_p2p(&x.op) && !x.is_wrong() && x.bytes > 0.0 && x.time_us > 0.0)
        .map(|x| CalibrationPoint { bytes: x.bytes, seconds: x.time_us * 1e-6 })
        .collect()
}

/// Reads `path` and fits the link. Errors are one line naming the file and what is wrong.
pub fn calibrate_file(path: &Path) -> Result<(Link, CommReport, Vec<CalibrationPoint>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--calibrate {}: {e}", path.display()))?;
    let rep: CommReport = serde_json::from_str(&text).map_err(|e| format!("--calibrate {}: not `attnbench comm --json` output: {e}", path.display()))?;
    let pts = p2p_points(&rep);
    let sizes = {
        let mut b: Vec<u64> = pts.iter().map(|p| p.bytes as u64).collect();
        b.sort_unstable();
        b.dedup();
        b.len()
    };
    let link = fit_link(&pts).ok_or_else(|| {
        if sizes < 2 {
            format!("--calibrate {}: need send/recv results at two or more message sizes to fit α and β (found {sizes})", path.display())
        } else {
            format!(
                "--calibrate {}: the send/recv times of {} points over {sizes} sizes do not grow with the message size (noisy or overloaded machine?); cannot fit α and β",
                path.display(),
                pts.len()
            )
        }
    })?;
    Ok((link, rep, pts))
}

/// Applies a fitted link: it replaces the intra-node link; also the inter-node link when the
/// measurement itself spanned nodes (`world_size > gpus_per_node`).
pub fn apply(topo: &mut Topology, link: Link, measured_world: usize) {
    topo.intra = link;
    if measured_world > topo.gpus_per_node {
        topo.inter = link;
    }
    topo.name = format!("{}+calibrated", topo.name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::comm_model::preset;

    #[test]
    fn fit_from_comm_json_reproduces_its_points() {
        let truth = Link { alpha_us: 4.0, beta_gbps: 8.0 };
        let rows: Vec<String> = [1e3, 1e4, 1e5, 1e6, 1e7]
            .iter()
            .map(|&b| format!(r#"{{"op":"sendrecv","bytes":{b},"time_us":{},"algbw_gbps":0,"busbw_gbps":0,"wrong":false}}"#, truth.time_s(b) * 1e6))
            .chain([
                r#"{"op":"all_gather","bytes":1000,"time_us":99999,"algbw_gbps":0,"busbw_gbps":0,"wrong":false}"#.to_string(),
                r#"{"op":"sendrecv","bytes":500,"time_us":99999,"algbw_gbps":0,"busbw_gbps":0,"wrong":true}"#.to_string(),
            ])
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("comm.json");
        std::fs::write(&p, format!(r#"{{"world_size":2,"device":"cpu","results":[{}]}}"#, rows.join(","))).unwrap();
        let (link, rep, pts) = calibrate_file(&p).unwrap();
        assert_eq!(pts.len(), 5);
        assert!((link.alpha_us - 4.0).abs() < 1e-6 && (link.beta_gbps - 8.0).abs() < 1e-6, "{link:?}");
        for q in &pts {
            assert!((link.time_s(q.bytes) - q.seconds).abs() / q.seconds < 1e-9);
        }
        let mut t = preset("h100").unwrap();
        apply(&mut t, link, rep.world_size);
        assert_eq!(t.intra, link);
        assert_ne!(t.inter, link);
        std::fs::write(&p, r#"{"world_size":2,"results":[]}"#).unwrap();
        assert!(calibrate_file(&p).unwrap_err().contains("two or more"));
        // Times that fall with size (a machine busy at the small sizes) cannot be fitted.
        std::fs::write(&p, r#"{"world_size":2,"results":[{"op":"sendrecv","bytes":8,"time_us":4000},{"op":"sendrecv","bytes":1048576,"time_us":300}]}"#)
            .unwrap();
        assert!(calibrate_file(&p).unwrap_err().contains("do not grow"), "{}", calibrate_file(&p).unwrap_err());
    }
}
