//! The marker settings every target builder takes, checked one way for all
//! backends.

use crate::TargetError;

/// What a target builder was told about its marker record: its name prefix
/// and whether to keep one. A backend's builder holds one, forwards its
/// `prefix(..)` and `marker(..)` setters to it, and asks it at `build`:
/// a target sharing the audit store's transaction refuses every marker
/// setting (its APPLIED entry commits with the change, so it keeps none);
/// any other target keeps a marker unless told not to.
///
/// ```
/// use flamingock_core::MarkerSettings;
/// let mut m = MarkerSettings::default();
/// assert_eq!(m.separate("flamingock"), ("flamingock".to_owned(), true));
/// m.set_marker(true);
/// assert!(m.check_shared("app-db").is_err());
/// m.set_prefix("ops");
/// m.set_marker(false);
/// assert_eq!(m.separate("flamingock"), ("ops".to_owned(), false));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkerSettings {
    prefix: Option<String>,
    marker: Option<bool>,
}

impl MarkerSettings {
    /// Records the prefix of the marker's table, collection or item.
    pub fn set_prefix(&mut self, prefix: impl Into<String>) {
        self.prefix = Some(prefix.into());
    }

    /// Records whether to keep a marker.
    pub fn set_marker(&mut self, yes: bool) {
        self.marker = Some(yes);
    }

    /// For a target sharing the audit store's transaction: an error naming
    /// `target` when any marker setting asks for a marker.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] saying which settings to remove.
    pub fn check_shared(&self, target: &str) -> Result<(), TargetError> {
        if self.marker == Some(true) || self.prefix.is_some() {
            return Err(TargetError::Unsupported {
                target: target.to_owned(),
                detail: "a shared target commits its APPLIED entry with the change and keeps \
                         no marker: remove marker(true) and prefix(..)"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// For any other target: the prefix (`default_prefix` unless set) and
    /// whether it keeps a marker (yes unless told not to).
    pub fn separate(&self, default_prefix: &str) -> (String, bool) {
        (
            self.prefix
                .clone()
                .unwrap_or_else(|| default_prefix.to_owned()),
            self.marker.unwrap_or(true),
        )
    }
}
