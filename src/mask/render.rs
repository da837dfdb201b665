//! Mask pictures as PNG (the terminal picture is [`Mask::render`]).
//!
//! A mask is downsampled to at most `max_cells` × `max_cells` cells (a cell covers ⌈S/max_cells⌉ tokens
//! on each side); each cell is one grey level, the fraction of its (query, key) pairs that are attended
//! (black = all, white = none), computed exactly with [`Mask::cell_counts`] — no S² loop, so a 1M-token
//! mask renders in well under a second. Small masks are scaled up by an integer factor so the picture
//! is at least ~512 pixels wide. Heterogeneous-head masks are drawn as panels side by side. Text uses
//! the embedded DejaVu Sans, so no system font or fontconfig is needed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::Mask;

/// Default cap on cells per side (pixels before up-scaling).
pub const MAX_CELLS: usize = 1024;

const TITLE_PX: u32 = 36;
const GAP_PX: u32 = 16;
const MIN_SIDE_PX: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the embedded font could not be loaded")]
    Font,
    #[error("cannot draw {path}: {msg}")]
    Draw { path: String, msg: String },
    #[error("nothing to draw: no masks")]
    Empty,
}

/// Registers the embedded DejaVu Sans as "sans-serif" (idempotent; plotters keeps a global table).
pub fn register_font() -> Result<(), RenderError> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf")).map_err(|_| RenderError::Font)
}

/// Grey levels of one mask: `(rows, cols, values)`, value = attended fraction of the cell in [0, 1].
pub fn grey_cells(mask: &Mask, max_cells: usize) -> (usize, usize, Vec<f64>) {
    let max_cells = max_cells.max(1);
    let cq = mask.seqlen_q.div_ceil(max_cells).max(1);
    let ck = mask.seqlen_k.div_ceil(max_cells).max(1);
    let (rows, cols, counts) = mask.cell_counts(cq, ck);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let h = ((r + 1) * cq).min(mask.seqlen_q) - r * cq;
        for c in 0..cols {
            let w = ((c + 1) * ck).min(mask.seqlen_k) - c * ck;
            out.push(counts[r * cols + c] as f64 / (h * w) as f64);
        }
    }
    (rows, cols, out)
}

/// Writes `masks` (one panel each) with `title` above them to a PNG file at `path`.
pub fn write_png(masks: &[Mask], title: &str, path: &Path, max_cells: usize) -> Result<(), RenderError> {
    if masks.is_empty() {
        return Err(RenderError::Empty);
    }
    register_font()?;
    let panels: Vec<(usize, usize, Vec<f64>)> = masks.iter().map(|m| grey_cells(m, max_cells)).collect();
    let widest = panels.iter().map(|p| p.0.max(p.1)).max().unwrap_or(1);
    let scale = (MIN_SIDE_PX / widest).max(1) as u32;
    let width: u32 = panels.iter().map(|p| p.1 as u32 * scale).sum::<u32>() + GAP_PX * (panels.len() as u32 + 1);
    let height: u32 = panels.iter().map(|p| p.0 as u32 * scale).max().unwrap_or(1) + TITLE_PX + GAP_PX;
    crate::png::draw_to_png(path, (width.max(320), height), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        root.draw(&Text::new(title.to_string(), (GAP_PX as i32, 8), ("sans-serif", 18).into_font().color(&BLACK))).map_err(|e| e.to_string())?;
        let mut x0 = GAP_PX;
        for (rows, cols, vals) in &panels {
            let y0 = TITLE_PX;
            for r in 0..*rows {
                for c in 0..*cols {
                    let v = (255.0 * (1.0 - vals[r * cols + c])).round() as u8;
                    if v == 255 {
                        continue;
                    }
                    let colour = RGBColor(v, v, v);
                    let (px, py) = ((x0 + c as u32 * scale) as i32, (y0 + r as u32 * scale) as i32);
                    if scale == 1 {
                        root.draw_pixel((px, py), &colour).map_err(|e| e.to_string())?;
                    } else {
                        root.draw(&Rectangle::new([(px, py), (px + scale as i32, py + scale as i32)], colour.filled())).map_err(|e| e.to_string())?;
                    }
                }
            }
            // Thin frame so empty borders are visible.
            let (w, h) = ((cols * scale as usize) as i32, (rows * scale as usize) as i32);
            root.draw(&Rectangle::new([(x0 as i32 - 1, y0 as i32 - 1), (x0 as i32 + w, y0 as i32 + h)], RGBColor(160, 160, 160))).map_err(|e| e.to_string())?;
            x0 += *cols as u32 * scale + GAP_PX;
        }
        Ok(())
    })
    .map_err(|msg| RenderError::Draw { path: path.display().to_string(), msg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{build_pattern, Params};

    #[test]
    fn grey_levels_are_exact_fractions() {
        let m = build_pattern("causal", 4, &Params::new()).unwrap().groups.remove(0);
        let (r, c, v) = grey_cells(&m, 2);
        assert_eq!((r, c), (2, 2));
        assert_eq!(v, vec![0.75, 0.0, 1.0, 0.75]);
    }

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let hm = build_pattern("per_head", 300, &Params::new().set("patterns", "causal,sliding_window").set("window_left", 20).set("window_right", 5)).unwrap();
        write_png(&hm.groups, "per_head  S=300", &path, MAX_CELLS).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
