//! Owns the input limits of `reckon.yaml` (`limits:`): how much a revision, a file, a commit and
//! a fetch may cost the agent before it is refused or cut, each with a safe default.

use super::duration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bounds on what one App's source may make the agent read, hold and record. Every bound that
/// is hit is a recorded, named error (a refused render or fetch, nothing pruned) or, for what
/// is only recorded (commit messages, changed paths), a cut with a marker saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputLimits {
    /// Files under an App's path read for one render.
    pub files_per_render: usize,
    /// Bytes of those files together.
    pub bytes_per_render: u64,
    /// Bytes of any one of them (checked before it is loaded).
    pub bytes_per_file: u64,
    /// Directory levels under the App's path.
    pub tree_depth: usize,
    /// Bytes of scalars one YAML file may expand to with its aliases replaced.
    pub yaml_expanded_bytes: usize,
    /// Bytes of a commit message kept in the record; the rest is cut with a marker.
    pub commit_message_bytes: usize,
    /// Changed paths kept per commit in the record; the rest are counted in a marker.
    pub changed_paths: usize,
    /// Longest one fetch may take, network and all; past it the fetch fails (recorded as
    /// `SourceFetchFailed`) and lets go of the mirror for the next.
    #[serde(with = "duration")]
    pub fetch_timeout: Duration,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            files_per_render: 10_000,
            bytes_per_render: 64 << 20,
            bytes_per_file: 16 << 20,
            tree_depth: 32,
            yaml_expanded_bytes: 32 << 20,
            commit_message_bytes: 64 << 10,
            changed_paths: 1_000,
            fetch_timeout: Duration::from_secs(300),
        }
    }
}

impl InputLimits {
    /// The first bound that cannot work (zero), named by its key.
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("files_per_render", self.files_per_render == 0),
            ("bytes_per_render", self.bytes_per_render == 0),
            ("bytes_per_file", self.bytes_per_file == 0),
            ("tree_depth", self.tree_depth == 0),
            ("yaml_expanded_bytes", self.yaml_expanded_bytes == 0),
            ("fetch_timeout", self.fetch_timeout.is_zero()),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((key, _)) => Err(format!("limits.{key} must be greater than 0")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_not_written_and_zero_is_refused() {
        let limits: InputLimits =
            serde_saphyr::from_str("yaml_expanded_bytes: 1024\nfetch_timeout: 30s\n").unwrap();
        assert_eq!(limits.yaml_expanded_bytes, 1024);
        assert_eq!(limits.fetch_timeout, Duration::from_secs(30));
        assert_eq!(
            limits.files_per_render,
            InputLimits::default().files_per_render
        );
        assert!(limits.check().is_ok());
        let zero = InputLimits {
            tree_depth: 0,
            ..limits
        };
        assert_eq!(
            zero.check().unwrap_err(),
            "limits.tree_depth must be greater than 0"
        );
        assert!(serde_saphyr::from_str::<InputLimits>("no_such: 1\n").is_err());
    }
}
