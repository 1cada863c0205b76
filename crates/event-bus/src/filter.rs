//! Event type filters: comma-separated globs such as `turn.*,sip.registration.changed`.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A set of globs over event types; empty means "everything".
#[derive(Clone, Debug)]
pub struct TypeFilter {
    set: Option<GlobSet>,
    source: String,
}

/// A glob in a filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid event type pattern {pattern:?}: {reason}")]
pub struct FilterError {
    /// The offending pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TypeFilter {
    /// Matches every event.
    pub fn all() -> Self {
        Self {
            set: None,
            source: String::new(),
        }
    }

    /// Parses comma-separated globs (`*` matches any run of characters, dots included).
    pub fn parse(spec: &str) -> Result<Self, FilterError> {
        let patterns: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        Self::from_patterns(&patterns)
    }

    /// Builds a filter from a list of globs.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, FilterError> {
        if patterns.is_empty() {
            return Ok(Self::all());
        }
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '?' | '_' | '-'))
            {
                return Err(FilterError {
                    pattern: p.to_owned(),
                    reason: "use letters, digits, `.`, `_`, `-`, `*` and `?` only".into(),
                });
            }
            let glob = Glob::new(p).map_err(|e| FilterError {
                pattern: p.to_owned(),
                reason: e.kind().to_string(),
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| FilterError {
            pattern: patterns
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(","),
            reason: e.to_string(),
        })?;
        Ok(Self {
            set: Some(set),
            source: patterns
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    /// Does an event type pass the filter?
    pub fn matches(&self, ty: &str) -> bool {
        self.set.as_ref().is_none_or(|s| s.is_match(ty))
    }

    /// The filter as given, comma-separated ("" for everything).
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, ty: &str, expected: bool) {
        let f = TypeFilter::parse(spec).expect("valid filter");
        assert_eq!(f.matches(ty), expected, "{spec:?} vs {ty:?}");
    }

    #[test]
    fn globs() {
        check("", "anything.at.all", true);
        check("turn.*", "turn.allocation.created", true);
        check("turn.*", "turnx.allocation", false);
        check("turn.*", "sip.registration.changed", false);
        check(
            "turn.*, sip.registration.changed",
            "sip.registration.changed",
            true,
        );
        check("*.created", "rooms.room.created", true);
        check("hooks.stream.?ublished", "hooks.stream.published", true);
        check("rooms.room.created", "rooms.room.created.extra", false);
    }

    #[test]
    fn rejects_garbage() {
        assert!(TypeFilter::parse("turn.[").is_err());
        assert!(TypeFilter::parse("turn/*").is_err());
        assert!(TypeFilter::parse("a{b,c}").is_err());
    }
}
