//! Decoding a stored payload straight into its variant, named by the log's `event_type` column.
//!
//! Payloads are stored internally tagged (`{"type": "LicenseCreated", ...}`), and serde's derive
//! for such an enum cannot know the variant before it has seen the `type` key, so it first
//! buffers the whole payload as a tree of `Content` values and then decodes the variant from
//! that tree: two passes and an allocation per field, a visible share of a rebuild's reader
//! (BENCHMARKS.md, "Round 2, part 2"). The reader already knows the type from its column, so
//! [`event_enum!`] declares each event enum together with a twin that serde decodes as an
//! externally tagged enum, whose variant is taken from the column and whose fields are read in
//! one pass from the payload text (the stored `type` key is an unknown field there, skipped).
//! The stored format is unchanged: the enum itself still serialises and deserialises tagged.

use serde::de::{self, DeserializeSeed, EnumAccess, VariantAccess, Visitor};

/// Declares an event enum (every variant a struct variant, stored under its own name as the
/// `type` tag), its [`crate::DomainEvent`] impl for `category`, and the decode by type.
macro_rules! event_enum {
    (
        category = $category:expr;
        $(#[$attr:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vattr:meta])*
                $variant:ident { $( $(#[$fattr:meta])* $field:ident : $fty:ty ),* $(,)? }
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis enum $name {
            $( $(#[$vattr])* $variant { $( $(#[$fattr])* $field: $fty ),* } ),*
        }

        impl $crate::DomainEvent for $name {
            const CATEGORY: $crate::StreamCategory = $category;

            fn event_type(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => stringify!($variant), )*
                }
            }

            fn decode_typed(event_type: &str, payload: &str) -> serde_json::Result<Self> {
                /// The same variants and fields, externally tagged: decoded by the column's type.
                #[derive(serde::Deserialize)]
                #[allow(clippy::enum_variant_names, clippy::large_enum_variant)]
                enum ByType {
                    $( $(#[$vattr])* $variant { $( $(#[$fattr])* $field: $fty ),* } ),*
                }
                let mut json = serde_json::Deserializer::from_str(payload);
                let decoded: ByType =
                    serde::Deserialize::deserialize($crate::typed_decode::Typed::new(event_type, &mut json))?;
                json.end()?;
                Ok(match decoded {
                    $( ByType::$variant { $( $field ),* } => Self::$variant { $( $field ),* }, )*
                })
            }
        }

        #[cfg(test)]
        impl $crate::typed_decode::tests::Samples for $name {
            fn samples() -> Vec<Self> {
                vec![ $( Self::$variant { $( $field: $crate::typed_decode::tests::Sample::sample() ),* } ),* ]
            }
        }
    };
}
pub(crate) use event_enum;

/// A payload with its variant's name, presented to serde as an externally tagged enum value.
pub struct Typed<'t, D> {
    event_type: &'t str,
    payload: D,
}

impl<'t, D> Typed<'t, D> {
    pub fn new(event_type: &'t str, payload: D) -> Self {
        Self { event_type, payload }
    }
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Typed<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom("a payload decoded by its type must be decoded as an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de, D: de::Deserializer<'de>> EnumAccess<'de> for Typed<'_, D> {
    type Error = D::Error;
    type Variant = Fields<D>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Fields<D>), D::Error> {
        let name = de::value::StrDeserializer::<D::Error>::new(self.event_type);
        Ok((seed.deserialize(name)?, Fields(self.payload)))
    }
}

/// The payload as the variant's fields.
pub struct Fields<D>(D);

impl<'de, D: de::Deserializer<'de>> VariantAccess<'de> for Fields<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), D::Error> {
        Err(de::Error::custom("event variants carry fields"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, D::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::app::{SigningKey, Webhook, WebsocketKey};
    use crate::commerce::{
        CommerceAction, Connection, HeldReason, NormalizedEvent, ProductMapping, Provider, SkipReason,
    };
    use crate::{DomainEvent, EventData, LicenseKey, ListName, Sealed};
    use chrono::{DateTime, Utc};

    /// A value of a field's type with every part present (options `Some`, lists non-empty), so
    /// a field the two decodes read differently shows.
    pub(crate) trait Sample {
        fn sample() -> Self;
    }

    /// One value of every variant of an event enum (written by `event_enum!`).
    pub(crate) trait Samples: Sized {
        fn samples() -> Vec<Self>;
    }

    macro_rules! sample_by {
        ($($ty:ty => $value:expr),* $(,)?) => { $( impl Sample for $ty { fn sample() -> Self { $value } } )* };
    }

    sample_by! {
        String => "s\u{e9}\"q".to_string(),
        bool => true,
        u8 => 2,
        u32 => 7,
        u64 => u64::MAX / 3,
        i64 => -5,
        uuid::Uuid => uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
        DateTime<Utc> => "2026-12-07T05:40:01.123456Z".parse().unwrap(),
        Sealed => Sealed("sealed".into()),
        LicenseKey => LicenseKey::from_random([7; 16]),
        Provider => Provider::Lemon,
        ListName => ListName::IpWhitelist,
        SkipReason => SkipReason::NoLicenseToRevoke,
        HeldReason => HeldReason::NonTransient,
        SigningKey => SigningKey { key_id: Sample::sample(), public_key: Sample::sample(), private_key: Sample::sample() },
        WebsocketKey => WebsocketKey { sealed: Sample::sample(), digest: Sample::sample() },
        Webhook => Webhook {
            webhook_id: Sample::sample(),
            url: Sample::sample(),
            events: Sample::sample(),
            enabled: true,
            secret: Sample::sample(),
            created_at: Sample::sample(),
        },
        Connection => Connection {
            connection_id: Sample::sample(),
            provider: Provider::Stripe,
            signing_secret: Sample::sample(),
            api_key: Sample::sample(),
        },
        ProductMapping => serde_json::from_value(serde_json::json!({
            "mappingId": uuid::Uuid::nil(), "provider": "stripe", "priceId": "p", "productId": "q",
            "kind": "one_time", "days": 30, "hwidSlots": 1, "label": "l", "variables": {}, "respectQuantity": true
        }))
        .unwrap(),
        NormalizedEvent => NormalizedEvent {
            action: CommerceAction::Renewal,
            object_id: Sample::sample(),
            line_items: None,
            subscription_id: Sample::sample(),
            payment_refs: Sample::sample(),
            amount: None,
        },
    }

    /// Types whose default value is the sample (maps and settings: their own tests cover them).
    macro_rules! sample_by_default {
        ($($ty:ty),*) => { $( impl Sample for $ty { fn sample() -> Self { Self::default() } } )* };
    }

    sample_by_default!(
        crate::Variables,
        crate::VariableAccessMap,
        crate::SecurityLists,
        crate::app::ResealedSecrets,
        crate::app::AppSettings,
        crate::file::FilePolicy,
        crate::AccountId,
        crate::AppId,
        crate::ApiKeyId,
        crate::app_user::AppUserId
    );

    impl<T: Sample> Sample for Option<T> {
        fn sample() -> Self {
            Some(T::sample())
        }
    }

    impl<T: Sample> Sample for Vec<T> {
        fn sample() -> Self {
            vec![T::sample(), T::sample()]
        }
    }

    fn decodes_the_same_both_ways<E: DomainEvent + Samples + PartialEq>() {
        let samples = E::samples();
        assert!(!samples.is_empty());
        for event in samples {
            let stored = EventData::encode(&event);
            let text = stored.payload.to_string();
            let tagged: E = serde_json::from_str(&text).unwrap();
            let typed = E::decode_typed(stored.event_type, &text)
                .unwrap_or_else(|e| panic!("{} by its type: {e}", stored.event_type));
            assert_eq!(typed, tagged, "{}", stored.event_type);
            assert_eq!(typed, event, "{}", stored.event_type);
        }
    }

    #[test]
    fn every_event_type_decodes_by_its_column_as_by_its_tag() {
        decodes_the_same_both_ways::<crate::account::AccountEvent>();
        decodes_the_same_both_ways::<crate::app::AppEvent>();
        decodes_the_same_both_ways::<crate::app_user::AppUserEvent>();
        decodes_the_same_both_ways::<crate::app_user::LoginReservationEvent>();
        decodes_the_same_both_ways::<crate::commerce::CommerceEvent>();
        decodes_the_same_both_ways::<crate::email_reservation::EmailReservationEvent>();
        decodes_the_same_both_ways::<crate::file::FileEvent>();
        decodes_the_same_both_ways::<crate::license::LicenseEvent>();
    }

    #[test]
    fn a_payload_that_does_not_fit_its_type_is_an_error_not_another_variant() {
        use crate::license::LicenseEvent;
        let revoked = r#"{"type":"LicenseRevoked","at":"2026-12-07T05:40:01Z"}"#;
        assert!(matches!(
            LicenseEvent::decode_typed("LicenseRevoked", revoked),
            Ok(LicenseEvent::LicenseRevoked { .. })
        ));
        // Same fields, other variant: the column decides (the tag is never read on this path).
        assert!(matches!(
            LicenseEvent::decode_typed("LicenseDeleted", revoked),
            Ok(LicenseEvent::LicenseDeleted { .. })
        ));
        let unknown = LicenseEvent::decode_typed("LicenseTeleported", revoked).unwrap_err();
        assert!(unknown.to_string().starts_with("unknown variant"), "{unknown}");
        assert!(LicenseEvent::decode_typed("HwidBound", revoked).is_err(), "missing field");
        assert!(LicenseEvent::decode_typed("LicenseRevoked", &format!("{revoked} x")).is_err(), "trailing text");
    }
}
