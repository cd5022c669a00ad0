//! What handlers check in the read models before they run a command.

use projections::queries;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::AppState;

/// 400 naming every service of the list `field` that does not exist (or is retired).
pub async fn known_services(
    state: &AppState,
    field: &str,
    ids: impl Iterator<Item = Uuid>,
) -> Result<(), ApiError> {
    let ids: Vec<Uuid> = ids.collect();
    let client = state.store.pool().get().await?;
    let unknown = queries::unknown_services(&client, &ids).await?;
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(
        ids.iter()
            .enumerate()
            .filter(|(_, id)| unknown.contains(id))
            .map(|(i, id)| domain::FieldError {
                field: format!("{field}[{i}]"),
                message: format!("there is no service {id} in use"),
            })
            .collect(),
    ))
}

/// The template `id` as a caller of `tenant` may see it (its tenant's or of no tenant),
/// deleted ones too; 404 otherwise.
pub async fn visible_template(
    state: &AppState,
    tenant: Option<&str>,
    id: Uuid,
) -> Result<projections::Versioned<domain::template::Template>, ApiError> {
    let client = state.store.pool().get().await?;
    queries::template(&client, id, tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such template".into()))
}

/// The template `id` a request names, if the caller may use it: visible to it and not
/// deleted; 404 otherwise.
pub async fn template(
    state: &AppState,
    tenant: Option<&str>,
    id: Uuid,
) -> Result<projections::Versioned<domain::template::Template>, ApiError> {
    Some(visible_template(state, tenant, id).await?)
        .filter(|t| t.state.deleted_at.is_none())
        .ok_or_else(|| ApiError::NotFound("no such template".into()))
}

/// A field a request must have, from itself or its template: 400 naming it when neither
/// gives it.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::invalid(
            field,
            "required: give it, or a template_id whose template has it",
        )
    })
}
