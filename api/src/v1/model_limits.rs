//! Limits on the live-session fields of apps and licenses, set per deployment.

/// How big the live-session fields the Developer API accepts may be.
#[derive(Debug, Clone)]
pub struct LiveModelLimits {
    /// Characters of an app's `version` (`LICENSD_MAX_APP_VERSION_CHARS`).
    pub max_app_version_chars: usize,
    /// Levels one license may have (`LICENSD_MAX_LICENSE_LEVELS`); each is 1–16 characters.
    pub max_license_levels: usize,
    /// Largest `maxSessions` of a license (`LICENSD_MAX_LICENSE_SESSIONS`).
    pub max_license_sessions: u32,
}

impl Default for LiveModelLimits {
    fn default() -> Self {
        Self { max_app_version_chars: 32, max_license_levels: 16, max_license_sessions: 10_000 }
    }
}
