//! Result rows, their CSV files and the run metadata (`meta.json`).

pub mod csvio;
pub mod meta;
pub mod row;

pub use crate::error::one_line;
pub use csvio::{read_rows, CsvAppender};
pub use meta::{RunMeta, Segment};
pub use row::{Row, Status};
