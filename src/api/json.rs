//! JSON answers that are already text: a cached answer is served as Redis
//! holds it, and a fresh one is serialized once, for the client and the cache
//! alike. Parsing a cached entry into the model only to serialize it again
//! was a tenth of the service's time on cached reads (docs/loadtest). The
//! OpenAPI description still shows the model's schema.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::Serialize;

/// The content type of every JSON answer.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON body of type `T`, as text.
#[derive(Debug)]
pub struct JsonText<T> {
    text: String,
    of: PhantomData<fn() -> T>,
}

impl<T: Serialize> JsonText<T> {
    /// Serializes `value`.
    pub fn encode(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self::trusted)
    }
}

impl<T> JsonText<T> {
    /// Text known to be the JSON of a `T`: written by [`JsonText::encode`],
    /// here or on another instance, and read back from the cache.
    pub fn trusted(text: String) -> Self {
        Self {
            text,
            of: PhantomData,
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<T: Type> Payload for JsonText<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for JsonText<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(CONTENT_TYPE)
            .body(self.text)
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::{Example, ToJSON};
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::api::model::{Movement, MovementStatus, ProductLine, Receiver, Sender};

    /// The text served for a cached answer is what poem-openapi would have
    /// served for the model itself, field for field, nulls and fractional
    /// seconds included.
    #[test]
    fn encoded_text_is_the_json_poem_openapi_would_serve() {
        let mut movements = vec![Movement::example()];
        movements.push(Movement {
            movement_id: Uuid::from_u128(7),
            status: MovementStatus::InTransit,
            sender: Some(Sender {
                warehouse_id: Uuid::from_u128(8),
                code: "WH-0001".into(),
                departed_at: datetime!(0001-01-01 00:00:00.000001 UTC),
            }),
            receiver: None::<Receiver>,
            elapsed_seconds: None,
            products: vec![ProductLine {
                product_id: Uuid::from_u128(9),
                sent: Some(5),
                received: None,
                difference: None,
            }],
            quantity_sent: Some(5),
            quantity_received: None,
            quantity_difference: None,
        });
        for movement in movements {
            let text = JsonText::encode(&movement).unwrap();
            let served: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(Some(served), movement.to_json());
        }
    }
}
