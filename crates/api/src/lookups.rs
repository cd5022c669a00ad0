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
