//! What few licenses carry: offline machines, portal resets, live-session settings, a linked
//! user, the buyer email's index. Kept behind one pointer that stays empty until one of them is
//! set, so the million licenses of an in-memory model do not each hold about 120 bytes of empty
//! fields (the model's memory per license is a measured target).

use super::{BuyerEmailIndex, OfflineMachine};
use crate::app_user::AppUserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Deref, DerefMut};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LicenseExtras {
    /// Machines that ever activated offline (HWID resets do not free them), with their files.
    pub offline_machines: Vec<OfflineMachine>,
    /// When the end user reset machines through the portal, oldest first.
    pub portal_resets: Vec<DateTime<Utc>>,
    /// Short strings a live session reports as the license's levels; empty until set.
    pub levels: Vec<String>,
    /// Floating seats: most live sessions authorized by this license at once; `None`: unlimited.
    pub max_sessions: Option<u32>,
    /// The app user the license is linked to: at most one, decided on this stream.
    pub linked_user: Option<AppUserId>,
    /// What the log says of the buyer email's keyed index, so the backfill of licenses from
    /// before the index appends it once and never over a later change or removal.
    pub buyer_email: BuyerEmailIndex,
}

static NONE_SET: LicenseExtras = LicenseExtras {
    offline_machines: Vec::new(),
    portal_resets: Vec::new(),
    levels: Vec::new(),
    max_sessions: None,
    linked_user: None,
    buyer_email: BuyerEmailIndex::NotIndexed,
};

/// [`LicenseExtras`] read as if always present: empty ones read as the defaults, and the first
/// write allocates them. Equality and serialization look at the values, never at whether the
/// allocation exists.
#[derive(Debug, Clone, Default)]
pub struct Extras(Option<Box<LicenseExtras>>);

impl Extras {
    /// True when every extra has its default value.
    pub fn is_empty(&self) -> bool {
        **self == NONE_SET
    }

    /// Frees the allocation when a change left every extra at its default (an unlink on a
    /// license that only had a link).
    pub fn compact(&mut self) {
        if self.0.is_some() && self.is_empty() {
            self.0 = None;
        }
    }
}

impl From<LicenseExtras> for Extras {
    fn from(extras: LicenseExtras) -> Self {
        let mut extras = Extras(Some(Box::new(extras)));
        extras.compact();
        extras
    }
}

impl Deref for Extras {
    type Target = LicenseExtras;
    fn deref(&self) -> &LicenseExtras {
        self.0.as_deref().unwrap_or(&NONE_SET)
    }
}

impl DerefMut for Extras {
    fn deref_mut(&mut self) -> &mut LicenseExtras {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Extras {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Serialize for Extras {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Extras {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LicenseExtras::deserialize(deserializer).map(Extras::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_extras_hold_no_allocation_and_equal_allocated_defaults() {
        let mut extras = Extras::default();
        assert!(extras.is_empty() && extras.0.is_none());
        extras.linked_user = Some(AppUserId::new());
        assert!(extras.0.is_some() && !extras.is_empty());
        extras.linked_user = None;
        assert_eq!(extras, Extras::default(), "values compare, not allocations");
        extras.compact();
        assert!(extras.0.is_none(), "a change back to the defaults frees the allocation");
    }

    #[test]
    fn serialized_extras_round_trip_and_empty_ones_come_back_unallocated() {
        let extras =
            Extras::from(LicenseExtras { levels: vec!["pro".into()], max_sessions: Some(2), ..Default::default() });
        let text = serde_json::to_string(&extras).unwrap();
        assert_eq!(serde_json::from_str::<Extras>(&text).unwrap(), extras);
        let empty: Extras = serde_json::from_str(&serde_json::to_string(&Extras::default()).unwrap()).unwrap();
        assert!(empty.0.is_none());
        let missing: Extras = serde_json::from_str("{}").unwrap();
        assert!(missing.0.is_none(), "fields absent from the text are defaults");
    }
}
