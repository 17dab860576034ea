//! The applied-set summary: what a start with nothing pending reads instead
//! of the snapshot.
//!
//! Every replica checks, on every start, whether anything is pending. Read
//! as the snapshot, that check grows with the number of changes (every
//! current-state row travels and is decoded). A store that keeps an
//! [`AuditSummary`] answers it with one row of constant size: the number of
//! current-state rows, how many of them count as applied, and an
//! order-independent digest of `(change id, checksum)` over those. The
//! runner computes the same summary from its pipeline; when the two are
//! equal, every change of the pipeline is applied with the checksum it has
//! now, and no other change has an entry, which is exactly the case where
//! the full path finds nothing to do and nothing to report (no orphan, no
//! drift). On any difference the runner reads the snapshot and decides as
//! before, so the summary can make a start faster, never different.
//!
//! A store keeps it in the same atomic write as the current-state row
//! (the contract of [`AuditStore::summary`](crate::AuditStore::summary)),
//! checked by the audit suite against [`AuditSummary::of_snapshot`].

use sha2::{Digest, Sha256};

use crate::audit::{AuditEntry, AuditState};

/// Counts and digest of a store's current-state rows; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditSummary {
    /// Current-state rows (one per change with any entry).
    pub rows: u64,
    /// Rows whose state counts as applied ([`counts_as_applied`]).
    pub applied: u64,
    /// XOR of [`term`] over the applied rows.
    pub digest: i64,
}

/// Whether a change in `state` is done, for the summary: `APPLIED` and
/// `MANUAL_MARKED_AS_APPLIED` (the states the runner skips).
pub fn counts_as_applied(state: AuditState) -> bool {
    matches!(
        state,
        AuditState::Applied | AuditState::ManualMarkedAsApplied
    )
}

/// The digest term of one applied change: the first 8 bytes of
/// SHA-256(`<byte length of id>:<id><checksum or nothing>`), big-endian, as
/// a signed 64-bit integer (what SQL stores keep in a `bigint`); never 0
/// (0 becomes 1), so that stores can keep 0 for "not applied".
///
/// Stable across versions and platforms: stores keep it.
///
/// ```
/// use flamingock_core::summary::term;
/// assert_eq!(term("create-users", None), term("create-users", None));
/// assert_ne!(term("create-users", None), term("create-users", Some("ab12")));
/// ```
pub fn term(change_id: &str, checksum: Option<&str>) -> i64 {
    let mut h = Sha256::new();
    h.update(change_id.len().to_string().as_bytes());
    h.update(b":");
    h.update(change_id.as_bytes());
    if let Some(c) = checksum {
        h.update(c.as_bytes());
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    match i64::from_be_bytes(first) {
        0 => 1,
        t => t,
    }
}

/// The term a current-state row holding `entry` contributes: its [`term`]
/// when its state counts as applied, else 0.
pub fn applied_term(entry: &AuditEntry) -> i64 {
    if counts_as_applied(entry.state) {
        term(&entry.change_id, entry.checksum.as_deref())
    } else {
        0
    }
}

impl AuditSummary {
    /// The summary as a store keeps it (signed 64-bit columns or fields,
    /// each possibly absent): `None` when any part is missing (never
    /// started, or unknown) or a count is negative (no append of ours
    /// writes one), so the runner reads the snapshot instead.
    ///
    /// ```
    /// use flamingock_core::summary::AuditSummary;
    /// assert_eq!(AuditSummary::from_stored(Some(2), Some(1), Some(-7)).map(|s| s.rows), Some(2));
    /// assert_eq!(AuditSummary::from_stored(Some(2), None, Some(-7)), None);
    /// assert_eq!(AuditSummary::from_stored(Some(-1), Some(0), Some(0)), None);
    /// ```
    pub fn from_stored(
        rows: Option<i64>,
        applied: Option<i64>,
        digest: Option<i64>,
    ) -> Option<AuditSummary> {
        Some(AuditSummary {
            rows: u64::try_from(rows?).ok()?,
            applied: u64::try_from(applied?).ok()?,
            digest: digest?,
        })
    }

    /// The summary of a store whose current-state rows are `snapshot` (the
    /// reference every store's summary must equal).
    pub fn of_snapshot(snapshot: &[AuditEntry]) -> AuditSummary {
        let mut s = AuditSummary::default();
        for e in snapshot {
            s.rows += 1;
            if counts_as_applied(e.state) {
                s.applied += 1;
                s.digest ^= term(&e.change_id, e.checksum.as_deref());
            }
        }
        s
    }

    /// The summary of a store in which exactly `changes` (id, checksum)
    /// are recorded, all applied: what a pipeline with nothing pending reads.
    pub fn all_applied<'a>(changes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut s = AuditSummary::default();
        for (id, checksum) in changes {
            s.rows += 1;
            s.applied += 1;
            s.digest ^= term(id, checksum);
        }
        s
    }

    /// Updates the summary for a current-state row that goes from `old`
    /// (`None`: the change had no row) to `new`; for stores that maintain
    /// it in their own code.
    pub fn replace(&mut self, old: Option<&AuditEntry>, new: &AuditEntry) {
        match old {
            None => self.rows += 1,
            Some(o) if counts_as_applied(o.state) => {
                self.applied -= 1;
                self.digest ^= applied_term(o);
            }
            Some(_) => {}
        }
        if counts_as_applied(new.state) {
            self.applied += 1;
            self.digest ^= applied_term(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::reduce_snapshot;

    fn entry(id: &str, state: AuditState, checksum: Option<&str>) -> AuditEntry {
        let mut e = AuditEntry::new(id, state, 1);
        e.checksum = checksum.map(str::to_owned);
        e
    }

    #[test]
    fn the_term_is_stable_across_versions() {
        // SHA-256("4:0001"), first 8 bytes. Stores keep these values:
        // changing the function would make every
        // stored summary disagree (safe, since a mismatch reads the
        // snapshot, but every start would pay for it).
        assert_eq!(term("a", None), term("a", None));
        assert_eq!(format!("{:016x}", term("0001", None)), "46917a31341d2e77");
    }

    #[test]
    fn incremental_updates_equal_the_reference() {
        let mut history = Vec::new();
        let mut summary = AuditSummary::default();
        let steps = [
            ("a", AuditState::Started, None),
            ("a", AuditState::Applied, None),
            ("b", AuditState::Failed, None),
            ("c", AuditState::Applied, Some("x1")),
            ("c", AuditState::ManualMarkedAsRolledBack, Some("x1")),
            ("c", AuditState::Applied, Some("x2")),
            ("b", AuditState::ManualMarkedAsApplied, None),
        ];
        for (id, state, checksum) in steps {
            let e = entry(id, state, checksum);
            let current = reduce_snapshot(history.clone());
            let old = current.iter().find(|o| o.change_id == id);
            summary.replace(old, &e);
            history.push(e);
            assert_eq!(
                summary,
                AuditSummary::of_snapshot(&reduce_snapshot(history.clone()))
            );
        }
        assert_eq!(
            summary,
            AuditSummary::all_applied([("a", None), ("b", None), ("c", Some("x2"))])
        );
    }
}
