//! Tenant and token administration: `/api/v1/tenants`, `/api/v1/tokens`.
//!
//! The operator token (the first admin token, `admin.token`) administers
//! every tenant; a tenant's admin token administers its own tenant only.
//! A token someone may not administer answers 404, not 403, so tenants
//! cannot probe each other's token ids.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Caller};
use crate::auth::{AdminError, Cidr, Role, TokenSpec};

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            AdminError::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, m),
            AdminError::Internal(m) => {
                tracing::error!(error = %m, "administration failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        }
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Role::Admin)
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

pub async fn list_tenants(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let tenants: Vec<_> = state
        .tokens
        .tenants()
        .into_iter()
        .filter(|t| caller.0.administers(&t.name))
        .collect();
    Ok(Json(json!({ "tenants": tenants })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    retention_days: Option<u32>,
}

pub async fn create_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<CreateTenant>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&caller)?;
    if !caller.0.global {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the operator token creates tenants".into(),
        ));
    }
    let (tenant, created) = state
        .tokens
        .upsert_tenant(&request.name, request.retention_days)
        .map_err(|e| bad_request(format!("{e:#}")))?;
    tracing::info!(
        by = %caller.0.token_id,
        tenant = %tenant.name,
        created,
        retention_days = ?tenant.retention_days,
        "tenant saved"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "tenant": tenant, "created": created })),
    ))
}

pub async fn list_tokens(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(json!({ "tokens": state.tokens.list(&caller.0) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Default: the caller's tenant.
    #[serde(default)]
    tenant: Option<String>,
    role: Role,
    #[serde(default)]
    description: String,
    #[serde(default)]
    allowed_ips: Vec<String>,
}

pub async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&caller)?;
    let tenant = request.tenant.unwrap_or_else(|| caller.0.tenant.clone());
    if !caller.0.administers(&tenant) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this token administers tenant {:?} only", caller.0.tenant),
        ));
    }
    let allowed_ips = request
        .allowed_ips
        .iter()
        .map(|c| c.parse::<Cidr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(format!("allowed_ips: {e}")))?;
    let token = state
        .tokens
        .create_with(
            &tenant,
            request.role,
            TokenSpec {
                description: request.description,
                allowed_ips,
            },
        )
        .map_err(|e| bad_request(format!("{e:#}")))?;
    let id = token.split('_').nth(1).unwrap_or_default().to_string();
    tracing::info!(by = %caller.0.token_id, %tenant, role = ?request.role, token = %id, "token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "tenant": tenant, "role": request.role, "token": token })),
    ))
}

pub async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
    let info = state.tokens.revoke(&id, &caller.0)?;
    tracing::info!(by = %caller.0.token_id, tenant = %info.tenant, token = %id, "token revoked");
    Ok(Json(json!({ "revoked": info })))
}
