//! Extractors whose rejections are JSON errors like every other API error.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body; a malformed one is a JSON 400 (or 415 without a JSON
/// content type). A number with a zero fraction (`3.0`) is taken where an
/// integer is wanted: JSON Schema counts it as one, and so do JavaScript
/// clients.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        fitted(value).map(Body)
    }
}

/// A JSON body read by hand (a handler that also takes an empty one).
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value =
        serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?;
    fitted(value)
}

/// `value` as a `T`: every body is a JSON object (serde would also take a
/// struct from an array of its fields, which no document describes).
fn fitted<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    integral_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value)
        .map_err(|error| ApiError::bad_request(format!("the body does not fit: {error}")))
}

/// Turns every number with a zero fraction that fits an integer into that
/// integer, so that `u64` and `i64` fields take it (`f64` fields still do).
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else { return };
            // Within ±2^53 every integer is exact, so the cast loses nothing.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if float.fract() == 0.0 && float.abs() <= EXACT {
                *value = serde_json::Value::from(float as i64);
            }
        }
        serde_json::Value::Array(all) => all.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(object) => object.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// Path parameters; a malformed one is a JSON 400.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
    }
}

/// Query parameters; malformed ones are a JSON 400.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::{fitted, integral_numbers_as_integers};
    use serde_json::json;

    #[test]
    fn whole_numbers_written_with_a_fraction_become_integers() {
        let mut body = json!({"items": [3.0, 2.5, -0.0, 1e300], "position": 90071992547409.0, "name": "4.0"});
        integral_numbers_as_integers(&mut body);
        assert_eq!(
            body,
            json!({"items": [3, 2.5, 0, 1e300], "position": 90071992547409_i64, "name": "4.0"})
        );
        let first: u64 = serde_json::from_value(body["items"][0].clone()).unwrap_or_default();
        assert_eq!(first, 3);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Request {
        client: Option<String>,
    }

    #[test]
    fn a_body_is_an_object_not_an_array_of_fields() {
        assert!(
            serde_json::from_value::<Request>(json!([null])).is_ok(),
            "serde alone takes it"
        );
        assert!(fitted::<Request>(json!([null])).is_err());
        assert!(fitted::<Request>(json!({"client": null})).is_ok());
    }
}
