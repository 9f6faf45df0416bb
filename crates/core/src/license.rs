//! CML license editions.

use serde::{Deserialize, Serialize};

/// License editions, spelled as the platform does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum License {
    Personal,
    Enterprise,
    Evaluation,
}
