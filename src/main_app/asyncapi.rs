//! The AsyncAPI 3.0 document of the events reklama publishes (`GET /asyncapi.json`).
//!
//! Generated from the code like the OpenAPI document: the event names and their meaning come
//! from `domain::events::EventType`, each event's `data` schema from the type its module
//! serialises (`utoipa::ToSchema`), and the exchange from `events.exchange`. A new event type
//! does not compile until it is given its schema here.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{OpenApi, ToSchema};

use crate::domain::events::EventType;
use crate::modules::{intake, integrations, serving, tracking};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/asyncapi.json";

/// Every schema an event's `data` names, and those they name in turn.
#[derive(OpenApi)]
#[openapi(components(schemas(
    intake::AdvertChanged,
    intake::AdvertOffloaded,
    intake::VariantsReady,
    serving::CapReached,
    serving::AdvertEnded,
    tracking::StatsFlushed,
    tracking::ClickRecorded,
    integrations::WebhookDisabled,
    intake::AdvertOffloadFailed,
)))]
struct EventSchemas;

/// The schema name of an event's `data`.
fn data_schema(kind: EventType) -> String {
    match kind {
        EventType::AdvertCreated
        | EventType::AdvertUpdated
        | EventType::AdvertPaused
        | EventType::AdvertResumed
        | EventType::AdvertDeleted => intake::AdvertChanged::name(),
        EventType::AdvertOffloaded => intake::AdvertOffloaded::name(),
        EventType::AdvertVariantsReady => intake::VariantsReady::name(),
        EventType::AdvertCapReached => serving::CapReached::name(),
        EventType::AdvertEnded => serving::AdvertEnded::name(),
        EventType::StatsFlushed => tracking::StatsFlushed::name(),
        EventType::ClickRecorded => tracking::ClickRecorded::name(),
        EventType::WebhookDisabled => integrations::WebhookDisabled::name(),
        EventType::AdvertOffloadFailed => intake::AdvertOffloadFailed::name(),
    }
    .into_owned()
}

/// The envelope every message carries, with `type` and `data` fixed for one event type.
fn envelope(kind: EventType) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "type", "occurred_at", "customer_id", "advert_id", "data"],
        "properties": {
            "id": {
                "type": "string",
                "description": "Unique per event and the same in every repeat of it (delivery \
                                is at least once): consumers drop an id they have seen.",
                "examples": ["evt_4Qx1mZ0aB7cD9eF2gH5iJ8"]
            },
            "type": {"const": kind.as_str(), "description": "The event type, also the routing key."},
            "occurred_at": {
                "type": "string", "format": "date-time",
                "description": "When the change was committed (UTC, milliseconds).",
                "examples": ["2026-12-03T10:00:00.123Z"]
            },
            "customer_id": {"type": "integer", "format": "int64", "description": "The customer the event belongs to: the advert's owner, or the webhook's."},
            "advert_id": {"type": ["integer", "null"], "format": "int64"},
            "data": {"$ref": format!("#/components/schemas/{}", data_schema(kind))}
        }
    })
}

/// The document for an exchange named `exchange`.
pub fn document(exchange: &str) -> Value {
    let mut schemas = Map::new();
    if let Some(components) = EventSchemas::openapi().components {
        for (name, schema) in components.schemas {
            let schema: RefOr<Schema> = schema;
            schemas.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
    }
    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut operation_messages = Vec::new();
    for kind in EventType::ALL {
        let name = kind.as_str();
        let envelope_name = format!("{name}.envelope");
        schemas.insert(envelope_name.clone(), envelope(kind));
        messages.insert(
            name.to_owned(),
            json!({
                "name": name,
                "title": name,
                "summary": kind.summary(),
                "contentType": "application/json",
                "payload": {"$ref": format!("#/components/schemas/{envelope_name}")},
                "bindings": {"amqp": {"messageType": name, "bindingVersion": "0.3.0"}}
            }),
        );
        channel_messages.insert(
            name.to_owned(),
            json!({"$ref": format!("#/components/messages/{name}")}),
        );
        operation_messages.push(json!({"$ref": format!("#/channels/events/messages/{name}")}));
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "reklama events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What happens to customers' adverts and their counts, published to a \
                            durable topic exchange as persistent JSON messages with publisher \
                            confirms. The routing key is the event type, so a queue bound with \
                            `advert.*` receives every advert event and `stats.flushed` the \
                            counts. Delivery is at least once: every message carries a unique \
                            `id` (also the AMQP `message_id`), the same in a repeat. An event is \
                            written in the same database transaction as the change it reports, \
                            so none is lost while the broker is down; it waits and is published \
                            once the broker is back.",
            "license": {"name": "MIT OR Apache-2.0"}
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker of `events.amqp_url` (amqp:// or amqps://).",
                "variables": {"host": {"default": "localhost:5672"}}
            }
        },
        "channels": {
            "events": {
                "address": exchange,
                "title": "The events exchange",
                "description": "The topic exchange named by `events.exchange`, declared by \
                                reklama (durable, not auto-deleted). Bind a queue with the event \
                                types you want, or `#` for all.",
                "servers": [{"$ref": "#/servers/broker"}],
                "messages": channel_messages,
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": exchange, "type": "topic", "durable": true,
                                     "autoDelete": false, "vhost": "/"},
                        "bindingVersion": "0.3.0"
                    }
                }
            }
        },
        "operations": {
            "publishEvent": {
                "action": "send",
                "title": "reklama publishes an event",
                "channel": {"$ref": "#/channels/events"},
                "messages": operation_messages,
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": false, "bindingVersion": "0.3.0"}}
            }
        },
        "components": {"messages": messages, "schemas": schemas}
    })
}

/// The document as served, rendered once at start-up.
#[derive(Clone)]
pub struct AsyncApiDocument(web::Bytes);

impl AsyncApiDocument {
    pub fn new(exchange: &str) -> Self {
        Self(web::Bytes::from(
            serde_json::to_vec(&document(exchange)).unwrap_or_default(),
        ))
    }
}

/// Mounts `/asyncapi.json`.
pub fn configure(cfg: &mut web::ServiceConfig, doc: AsyncApiDocument) {
    cfg.route(
        DOCUMENT_PATH,
        web::get().to(move || {
            let body = doc.0.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .body(body)
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document points at something in it.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_event_has_a_message_and_every_reference_resolves() {
        let doc = document("reklama.events");
        for kind in EventType::ALL {
            let message = &doc["components"]["messages"][kind.as_str()];
            assert_eq!(message["name"], kind.as_str());
            assert!(doc["channels"]["events"]["messages"][kind.as_str()].is_object());
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > EventType::ALL.len() * 3);
        for target in found {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            assert!(
                doc.pointer(pointer).is_some(),
                "{target} does not resolve in the document"
            );
        }
        assert_eq!(doc["channels"]["events"]["address"], "reklama.events");
    }
}
