//! Result rows, their CSV files, the run metadata (`meta.json`), and the one owner of a run folder
//! that writes them ([`run_folder`], with its [`lock`]).

pub mod csvio;
pub mod lock;
pub mod meta;
pub mod row;
pub mod run_folder;

pub use crate::error::one_line;
pub use csvio::{read_rows, CsvAppender};
pub use meta::{RunMeta, Segment};
pub use row::{Row, Status};
pub use run_folder::RunFolder;
