//! ERROR-CODE values with their RFC reason phrases.

/// An error code (300–699) and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode {
    /// The number, e.g. 401.
    pub code: u16,
    /// The RFC's reason phrase.
    pub reason: &'static str,
}

impl ErrorCode {
    /// 300 (RFC 8489).
    pub const TRY_ALTERNATE: Self = Self {
        code: 300,
        reason: "Try Alternate",
    };
    /// 400 (RFC 8489).
    pub const BAD_REQUEST: Self = Self {
        code: 400,
        reason: "Bad Request",
    };
    /// 401 (RFC 8489).
    pub const UNAUTHENTICATED: Self = Self {
        code: 401,
        reason: "Unauthenticated",
    };
    /// 403 (RFC 8656).
    pub const FORBIDDEN: Self = Self {
        code: 403,
        reason: "Forbidden",
    };
    /// 420 (RFC 8489).
    pub const UNKNOWN_ATTRIBUTE: Self = Self {
        code: 420,
        reason: "Unknown Attribute",
    };
    /// 437 (RFC 8656).
    pub const ALLOCATION_MISMATCH: Self = Self {
        code: 437,
        reason: "Allocation Mismatch",
    };
    /// 438 (RFC 8489).
    pub const STALE_NONCE: Self = Self {
        code: 438,
        reason: "Stale Nonce",
    };
    /// 440 (RFC 8656).
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self {
        code: 440,
        reason: "Address Family not Supported",
    };
    /// 441 (RFC 8656).
    pub const WRONG_CREDENTIALS: Self = Self {
        code: 441,
        reason: "Wrong Credentials",
    };
    /// 442 (RFC 8656).
    pub const UNSUPPORTED_TRANSPORT: Self = Self {
        code: 442,
        reason: "Unsupported Transport Protocol",
    };
    /// 443 (RFC 8656).
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self {
        code: 443,
        reason: "Peer Address Family Mismatch",
    };
    /// 446 (RFC 6062).
    pub const CONNECTION_ALREADY_EXISTS: Self = Self {
        code: 446,
        reason: "Connection Already Exists",
    };
    /// 447 (RFC 6062).
    pub const CONNECTION_TIMEOUT_OR_FAILURE: Self = Self {
        code: 447,
        reason: "Connection Timeout or Failure",
    };
    /// 486 (RFC 8656).
    pub const ALLOCATION_QUOTA_REACHED: Self = Self {
        code: 486,
        reason: "Allocation Quota Reached",
    };
    /// 500 (RFC 8489).
    pub const SERVER_ERROR: Self = Self {
        code: 500,
        reason: "Server Error",
    };
    /// 508 (RFC 8656).
    pub const INSUFFICIENT_CAPACITY: Self = Self {
        code: 508,
        reason: "Insufficient Capacity",
    };
}
