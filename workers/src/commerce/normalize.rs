//! Provider payloads reduced to a [`NormalizedEvent`], with the personal data split off.
//!
//! Only what fulfilment needs is kept; the raw body is never stored (it holds the buyer's
//! address, name and more).

use licensd_domain::commerce::{Amount, CommerceAction, LineItem, NormalizedEvent, Provider};
use serde_json::Value;

/// Longest external event id accepted (it becomes part of a stream id).
const MAX_EXTERNAL_ID_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub external_id: String,
    pub event_type: String,
    pub normalized: NormalizedEvent,
    /// Personal data: goes to the PII vault, never into the event.
    pub email: Option<String>,
    pub customer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("the payload lacks {0}")]
    Missing(&'static str),
}

/// A string or number field as text (Lemon Squeezy ids are numbers, Stripe's are strings); an
/// expanded Stripe object (`{"id": ...}`) gives its id.
fn text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn quantity(value: &Value, pointer: &str) -> u32 {
    value.pointer(pointer).and_then(Value::as_u64).map_or(1, |q| q.clamp(1, u64::from(u32::MAX)) as u32)
}

pub fn normalize(provider: Provider, body: &[u8]) -> Result<Inbound, NormalizeError> {
    let payload: Value = serde_json::from_slice(body).map_err(|_| NormalizeError::NotJson)?;
    if !payload.is_object() {
        return Err(NormalizeError::NotJson);
    }
    let inbound = match provider {
        Provider::Stripe => stripe(&payload)?,
        Provider::Lemon => lemon(&payload)?,
    };
    if inbound.external_id.chars().count() > MAX_EXTERNAL_ID_CHARS {
        return Err(NormalizeError::Missing("a plausible event id"));
    }
    Ok(inbound)
}

/// Stripe line items (`{"data": [{"price": {...}, "quantity": n}]}`), from a webhook object or
/// from the line-items API.
pub fn stripe_line_items(list: &Value) -> Option<Vec<LineItem>> {
    let items = list.get("data")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|item| {
                Some(LineItem {
                    price_id: text(item, "/price/id").or_else(|| text(item, "/price"))?,
                    product_id: text(item, "/price/product"),
                    quantity: quantity(item, "/quantity"),
                })
            })
            .collect(),
    )
}

fn stripe(event: &Value) -> Result<Inbound, NormalizeError> {
    let external_id = text(event, "/id").ok_or(NormalizeError::Missing("id"))?;
    let event_type = text(event, "/type").ok_or(NormalizeError::Missing("type"))?;
    let object = event.pointer("/data/object").ok_or(NormalizeError::Missing("data.object"))?;
    let field = |name: &str| text(object, &format!("/{name}"));
    let refs = |names: &[&str]| names.iter().filter_map(|n| field(n)).collect::<Vec<_>>();
    let subscription = field("subscription").or_else(|| text(object, "/parent/subscription_details/subscription"));
    let (action, line_items, subscription_id, payment_refs) = match event_type.as_str() {
        "checkout.session.completed" => (
            CommerceAction::Purchase,
            object.get("line_items").and_then(stripe_line_items),
            subscription,
            refs(&["payment_intent", "invoice"]),
        ),
        "invoice.paid" if field("billing_reason").as_deref() == Some("subscription_create") => {
            (CommerceAction::Ignore, None, subscription, refs(&["payment_intent", "id"]))
        }
        "invoice.paid" => (
            CommerceAction::Renewal,
            object.get("lines").and_then(stripe_line_items),
            subscription,
            refs(&["payment_intent", "id"]),
        ),
        "customer.subscription.deleted" => (CommerceAction::Revoke, None, field("id"), vec![]),
        "charge.refunded" => (CommerceAction::Revoke, None, None, refs(&["payment_intent", "invoice", "id"])),
        "refund.created" | "charge.dispute.created" => {
            (CommerceAction::Revoke, None, None, refs(&["payment_intent", "charge"]))
        }
        _ => (CommerceAction::Unmapped, None, None, vec![]),
    };
    let email = text(object, "/customer_details/email").or_else(|| field("customer_email"));
    let object_id = field("id");
    // What was paid: a checkout session's total, an invoice's amount paid (a first invoice is
    // ignored: its checkout already counted the money).
    let paid = match action {
        CommerceAction::Purchase => object.get("amount_total"),
        CommerceAction::Renewal => object.get("amount_paid"),
        _ => None,
    };
    let amount = Amount::from_payload(paid, object.get("currency").and_then(Value::as_str));
    let normalized = NormalizedEvent { action, object_id, line_items, subscription_id, payment_refs, amount };
    Ok(Inbound { external_id, event_type, normalized, email, customer_id: field("customer") })
}

fn lemon(event: &Value) -> Result<Inbound, NormalizeError> {
    let event_type = text(event, "/meta/event_name").ok_or(NormalizeError::Missing("meta.event_name"))?;
    let data_id = text(event, "/data/id").ok_or(NormalizeError::Missing("data.id"))?;
    let attr = |name: &str| text(event, &format!("/data/attributes/{name}"));
    // Lemon Squeezy has no event id: the event, its object and the object's last change name one
    // delivery (a redelivery repeats the same body, so it maps to the same id).
    let changed = attr("updated_at").unwrap_or_default();
    let external_id = format!("{event_type}:{data_id}:{changed}");
    let first_item = || {
        let variant = attr("first_order_item/variant_id")?;
        Some(vec![LineItem {
            price_id: variant,
            product_id: attr("first_order_item/product_id"),
            quantity: quantity(event, "/data/attributes/first_order_item/quantity"),
        }])
    };
    let (action, line_items, subscription_id, payment_refs) = match event_type.as_str() {
        "order_created" => (CommerceAction::Purchase, first_item(), None, vec![data_id.clone()]),
        "subscription_payment_success" if attr("billing_reason").as_deref() == Some("initial") => {
            (CommerceAction::Ignore, None, attr("subscription_id"), vec![data_id.clone()])
        }
        "subscription_payment_success" => {
            (CommerceAction::Renewal, None, attr("subscription_id"), vec![data_id.clone()])
        }
        "subscription_cancelled" | "subscription_expired" => {
            (CommerceAction::Revoke, None, Some(data_id.clone()), attr("order_id").into_iter().collect())
        }
        "order_refunded" => (CommerceAction::Revoke, None, None, vec![data_id.clone()]),
        "subscription_payment_refunded" => (CommerceAction::Revoke, None, attr("subscription_id"), vec![]),
        _ => (CommerceAction::Unmapped, None, None, vec![]),
    };
    // An order's and a subscription invoice's `total` (minor units) and `currency`.
    let paid = matches!(action, CommerceAction::Purchase | CommerceAction::Renewal);
    let amount = paid
        .then(|| {
            let attributes = event.pointer("/data/attributes")?;
            Amount::from_payload(attributes.get("total"), attributes.get("currency").and_then(Value::as_str))
        })
        .flatten();
    let object_id = Some(data_id);
    let normalized = NormalizedEvent { action, object_id, line_items, subscription_id, payment_refs, amount };
    Ok(Inbound { external_id, event_type, normalized, email: attr("user_email"), customer_id: attr("customer_id") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stripe_checkout_keeps_references_and_splits_off_personal_data() {
        let body = json!({
            "id": "evt_1", "type": "checkout.session.completed",
            "data": { "object": {
                "id": "cs_1", "customer": "cus_1", "subscription": null, "payment_intent": "pi_1",
                "customer_details": { "email": "buyer@example.com", "name": "Buyer" }
            } }
        });
        let inbound = normalize(Provider::Stripe, body.to_string().as_bytes()).unwrap();
        assert_eq!(inbound.normalized.action, CommerceAction::Purchase);
        assert_eq!(inbound.normalized.line_items, None);
        assert_eq!(inbound.normalized.payment_refs, ["pi_1"]);
        assert_eq!(
            (inbound.email.as_deref(), inbound.customer_id.as_deref()),
            (Some("buyer@example.com"), Some("cus_1"))
        );
        assert!(!serde_json::to_string(&inbound.normalized).unwrap().contains("buyer@"));
        assert_eq!(inbound.normalized.amount, None, "no total in the payload: unknown, not 0");
    }

    #[test]
    fn purchases_and_renewals_record_what_was_paid_in_minor_units() {
        let session = json!({ "id": "evt_1", "type": "checkout.session.completed", "data": { "object": {
            "id": "cs_1", "amount_total": 1999, "currency": "eur" } } });
        let inbound = normalize(Provider::Stripe, session.to_string().as_bytes()).unwrap();
        assert_eq!(inbound.normalized.amount, Some(Amount { minor: 1999, currency: "EUR".into() }));
        let invoice = |reason: &str| {
            json!({ "id": "evt_2", "type": "invoice.paid", "data": { "object": {
                "id": "in_1", "billing_reason": reason, "subscription": "sub_1", "amount_paid": 500, "currency": "usd" } } })
        };
        let renewal = normalize(Provider::Stripe, invoice("subscription_cycle").to_string().as_bytes()).unwrap();
        assert_eq!(renewal.normalized.amount, Some(Amount { minor: 500, currency: "USD".into() }));
        let first = normalize(Provider::Stripe, invoice("subscription_create").to_string().as_bytes()).unwrap();
        assert_eq!(first.normalized.amount, None, "the checkout already counted it");
        // A refund is not revenue; nonsense amounts are unknown.
        let refund = json!({ "id": "evt_3", "type": "charge.refunded", "data": { "object": {
            "id": "ch_1", "amount_refunded": 1999, "amount_total": 1999, "currency": "eur" } } });
        assert_eq!(normalize(Provider::Stripe, refund.to_string().as_bytes()).unwrap().normalized.amount, None);
        for (total, currency) in [(json!(-5), json!("usd")), (json!(1.5), json!("usd")), (json!(5), json!("dollars"))] {
            let odd = json!({ "id": "evt_4", "type": "checkout.session.completed", "data": { "object": {
                "id": "cs_2", "amount_total": total, "currency": currency } } });
            assert_eq!(normalize(Provider::Stripe, odd.to_string().as_bytes()).unwrap().normalized.amount, None);
        }

        let order = json!({ "meta": { "event_name": "order_created" }, "data": { "id": "42", "attributes": {
            "total": 1900, "currency": "USD", "first_order_item": { "variant_id": 5, "quantity": 1 } } } });
        let inbound = normalize(Provider::Lemon, order.to_string().as_bytes()).unwrap();
        assert_eq!(inbound.normalized.amount, Some(Amount { minor: 1900, currency: "USD".into() }));
        let refunded = json!({ "meta": { "event_name": "order_refunded" }, "data": { "id": "42", "attributes": {
            "total": 1900, "currency": "USD" } } });
        assert_eq!(normalize(Provider::Lemon, refunded.to_string().as_bytes()).unwrap().normalized.amount, None);
    }

    #[test]
    fn first_invoices_are_ignored_and_later_ones_renew() {
        let invoice = |reason: &str| {
            json!({ "id": "evt_2", "type": "invoice.paid", "data": { "object": {
                "id": "in_1", "billing_reason": reason, "subscription": "sub_1", "payment_intent": "pi_2" } } })
        };
        let first = normalize(Provider::Stripe, invoice("subscription_create").to_string().as_bytes()).unwrap();
        assert_eq!(first.normalized.action, CommerceAction::Ignore);
        let renewal = normalize(Provider::Stripe, invoice("subscription_cycle").to_string().as_bytes()).unwrap();
        assert_eq!(renewal.normalized.action, CommerceAction::Renewal);
        assert_eq!(renewal.normalized.subscription_id.as_deref(), Some("sub_1"));
    }

    #[test]
    fn lemon_orders_name_their_variant_and_unknown_events_are_unmapped() {
        let order = json!({
            "meta": { "event_name": "order_created" },
            "data": { "type": "orders", "id": "42", "attributes": {
                "customer_id": 7, "user_email": "b@example.com", "updated_at": "2026-01-01T00:00:00Z",
                "first_order_item": { "variant_id": 555, "product_id": 9, "quantity": 2 } } }
        });
        let inbound = normalize(Provider::Lemon, order.to_string().as_bytes()).unwrap();
        let items = inbound.normalized.line_items.unwrap();
        assert_eq!((items[0].price_id.as_str(), items[0].quantity), ("555", 2));
        assert_eq!(inbound.customer_id.as_deref(), Some("7"));
        let other = json!({ "meta": { "event_name": "license_key_created" }, "data": { "id": "1" } });
        let inbound = normalize(Provider::Lemon, other.to_string().as_bytes()).unwrap();
        assert_eq!(inbound.normalized.action, CommerceAction::Unmapped);
        assert_eq!(normalize(Provider::Lemon, b"[]"), Err(NormalizeError::NotJson));
    }
}
