//! The files ops hand to each other, one typed format per file.
//!
//! An op never opens another op's files by hand: it reads and writes them
//! through the types here, so a format is defined once, next to its golden
//! test (`testdata/`), and the writer and every reader agree on it. The
//! runner's ops (`crate::ops`) and the torch worker (`hcpipe-torch`) both
//! import this module; it imports nothing else of the crate.
//!
//! | file | type | written by | read by |
//! |---|---|---|---|
//! | `OASIS-1_dataset/…` (tables, `.pt` volumes, raw T1s) | [`dataset::Dataset`], [`dataset::Layout`] | `fetch`, `synth` | `demographics`, `age_filter`, `crop`, `gmm`, `report` |
//! | a volume's `.pt` | [`pt`] | `synth` | [`dataset::Dataset::read_image`] |
//! | `population.tsv` | [`population::Population`] | `demographics` | `report` |
//! | `checks.tsv` | [`checks::Checks`] | `demographics` | `report` |
//! | `participants.tsv` (any upstream) | [`subjects::SubjectList::read_participants`] | a `cmd` stage, by hand | `split` |
//! | `folds.tsv` | [`folds::Folds`] | `kfold` | people, tests |
//! | `checks.tsv` of a split or fold | [`balance::BalanceChecks`] | `split`, `kfold` | people, tests |
//! | `subjects.tsv` | [`subjects::Subjects`] | `age_filter` | `evaluate`, `soft_vote`, `gmm` |
//! | a subject list's `train.tsv`, `validation.tsv`, `test.tsv` | [`subjects::SubjectSets`] | `split`, `kfold`, any cmd | `train_cnn`, `evaluate`, `train_ae`, `extract_codes` |
//! | `meta.json` of a crop | [`crop::CropMeta`] | `crop` | `train_cnn`, `evaluate`, `train_ae`, `extract_codes`, `report` |
//! | `{train,validation,all}.tsv` of a crop | [`crop::CropSubjects`] | `crop` | the worker's crop loader |
//! | `history.tsv` | [`history::History`] | `train_cnn`, `train_ae` | `report` |
//! | `predictions.tsv` | [`predictions::Predictions`] | `evaluate`, `soft_vote` | `soft_vote` |
//! | `codes.tsv` | [`codes::Codes`] | `extract_codes` | `gmm` |
//! | `assignments.tsv` | [`assignments::Assignments`] | `gmm` | `report` |
//! | `table.json` | [`table::PaperTable`] | `aggregate` | `report`, `hcpipe diff` |
//! | `metrics.json` | [`metrics`] | every op (a native op's through the runner) | `evaluate`, `collect`, `report` |
//!
//! Every TSV is read by one reader, [`tsv::Table`] (the `csv` crate, tab
//! separated, no quoting: the lab's tables carry quotes in free text), and
//! written by [`tsv::write`]. Numbers are written with Rust's shortest
//! round-trip `Display` (`0.5`, `81`, `0.0000032`), f32 values as f32, so a
//! value read back is the value written. Errors name the file and, where
//! there is one, the line.

/// A crop artifact's `meta.json` ([`crop::CropMeta`]); here, not in `crop`,
/// because [`subjects`] must tell a crop's `train.tsv` from a subject list's
/// and `crop` reads subject lists (no file cycle).
pub const CROP_META: &str = "meta.json";

pub mod assignments;
pub mod balance;
pub mod checks;
pub mod codes;
pub mod crop;
pub mod dataset;
pub mod folds;
pub mod history;
pub mod metrics;
pub mod population;
pub mod predictions;
pub mod pt;
pub mod subjects;
pub mod table;
pub mod tsv;

use std::path::{Path, PathBuf};

/// Why an artifact file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is there but not in its format; the message says how.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// Not about one file (an image of a subject, say); the message says which.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes `bytes` to `path`, naming the file on error.
fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Reads `path` as text, naming the file on error.
fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The checked-in example of each format, for the golden tests.
#[cfg(test)]
pub(crate) fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/artifact/testdata")
        .join(name)
}

/// Golden test helper: `read` parses the example, `write` gives its bytes back.
#[cfg(test)]
pub(crate) fn assert_round_trip<T>(
    name: &str,
    read: impl Fn(&Path) -> Result<T>,
    write: impl Fn(&Path, &T) -> Result<()>,
) -> T {
    let golden = testdata(name);
    let value = read(&golden).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(golden.file_name().unwrap());
    write(&out, &value).unwrap();
    let (want, got) = (
        std::fs::read_to_string(&golden).unwrap(),
        std::fs::read_to_string(&out).unwrap(),
    );
    assert_eq!(got, want, "{name}: write(read(file)) is not the file");
    value
}
