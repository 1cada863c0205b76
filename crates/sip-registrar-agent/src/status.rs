//! Registration status codes, exactly as SEMS db_reg_agent stores them.

use serde::{Deserialize, Serialize};

/// `registrations.registration_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// 0: not registered yet.
    Inactive,
    /// 1: a REGISTER was under way (read from SEMS databases and registered again at start; not written).
    Pending,
    /// 2: registered; `expiry` says until when.
    Active,
    /// 3: the last REGISTER failed; retried after `retry_interval`.
    Failed,
    /// 4: de-registered.
    Removed,
    /// 5: to be de-registered (set before the de-REGISTER is sent; a failed one stays here).
    ToBeRemoved,
}

impl Status {
    /// All, by code.
    pub const ALL: [Status; 6] = [
        Status::Inactive,
        Status::Pending,
        Status::Active,
        Status::Failed,
        Status::Removed,
        Status::ToBeRemoved,
    ];

    /// The database number.
    pub fn code(self) -> i16 {
        match self {
            Self::Inactive => 0,
            Self::Pending => 1,
            Self::Active => 2,
            Self::Failed => 3,
            Self::Removed => 4,
            Self::ToBeRemoved => 5,
        }
    }

    /// From the database number.
    pub fn from_code(code: i64) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Lower-case name (metrics label, API).
    pub fn name(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Removed => "removed",
            Self::ToBeRemoved => "to_be_removed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_sems() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.code() as usize, i);
            assert_eq!(Status::from_code(i as i64), Some(*s));
        }
        assert_eq!(Status::from_code(6), None);
        assert_eq!(Status::from_code(-1), None);
        assert_eq!(Status::ToBeRemoved.code(), 5);
    }
}
