//! ApiVersions: the exact list of what Eddy serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::{code, SUPPORTED};

/// The supported-API list, also sent with UNSUPPORTED_VERSION.
pub fn supported_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect()
}

pub fn handle(_req: &ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = code::NONE;
    r.api_keys = supported_list();
    // No features are finalized: transactions v2 is not implemented.
    r.finalized_features_epoch = -1;
    r
}

/// The answer to an ApiVersions request at a version Eddy does not know:
/// UNSUPPORTED_VERSION with the supported list, encoded as v0 (KIP-511).
pub fn unsupported() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = code::UNSUPPORTED_VERSION;
    r.api_keys = supported_list();
    r
}
