//! CML license editions.

use serde::{Deserialize, Serialize};

/// License editions, spelled as the platform does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum License {
    /// CML Personal.
    Personal,
    /// CML Enterprise.
    Enterprise,
    /// A CML evaluation license.
    Evaluation,
}
