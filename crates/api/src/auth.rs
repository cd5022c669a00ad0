//! Who is calling: `Authorization: Bearer <key>`, matched by the SHA-256 of the key against
//! the live keys on every request, so that a revocation takes effect at once everywhere.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use domain::api_key::{ApiKey, Role};
use domain::values::Audience;
use projections::queries::Viewer;
use projections::Versioned;

use crate::problem::ApiError;
use crate::state::AppState;

/// Longest `Authorization` value looked at; a real key is 70 characters.
const MAX_SECRET_LEN: usize = 512;

/// What a role may do beyond reading public notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create, list and revoke API keys.
    ManageKeys,
    /// Create, change and retire services.
    ManageServices,
    /// Register, list and delete webhooks, and read their deliveries.
    ManageWebhooks,
    /// List, read and delete email subscribers, and read their deliveries.
    ManageSubscribers,
    /// Declare and update incidents and maintenances, correct, publish postmortems.
    Publish,
    /// Read the event history of every tenant.
    Audit,
}

impl Permission {
    pub fn granted_to(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Permission::Publish, Role::Publisher)
                | (Permission::Audit, Role::Auditor)
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Permission::ManageKeys => "manage API keys (admin)",
            Permission::ManageServices => "manage services (admin)",
            Permission::ManageWebhooks => "manage webhooks (admin)",
            Permission::ManageSubscribers => "manage email subscribers (admin)",
            Permission::Publish => "publish notices (publisher or admin)",
            Permission::Audit => "read the history (auditor or admin)",
        }
    }
}

/// The caller of a request: anonymous, or the live API key it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Option<Versioned<ApiKey>>,
    pub client_ip: Option<IpAddr>,
}

impl Caller {
    /// Whose notices this caller may read. A tenant-bound key sees its tenant's (and public)
    /// notices only, whatever its role; an unbound key of a role that writes or audits sees
    /// every tenant's; anonymous callers and unbound readers see public notices.
    pub fn viewer(&self) -> Viewer {
        match &self.key {
            None => Viewer::Public,
            Some(key) => match (&key.state.tenant, key.state.role) {
                (Some(tenant), _) => Viewer::Tenant(tenant.clone()),
                (None, Role::Reader) => Viewer::Public,
                (None, _) => Viewer::Everyone,
            },
        }
    }

    /// The key, if it may do `permission`: 401 for anonymous callers, 403 for other roles.
    pub fn require(&self, permission: Permission) -> Result<&Versioned<ApiKey>, ApiError> {
        let key = self.key.as_ref().ok_or_else(|| {
            ApiError::Unauthorized("this operation needs an API key (Authorization: Bearer)".into())
        })?;
        if permission.granted_to(key.state.role) {
            Ok(key)
        } else {
            Err(ApiError::Forbidden(format!(
                "a key with role {} may not {}",
                key.state.role.as_str(),
                permission.describe()
            )))
        }
    }

    /// The tenant the caller is bound to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.key.as_ref().and_then(|k| k.state.tenant.as_deref())
    }

    /// Whether the caller may manage a resource of `tenant` (an API key, a webhook): an
    /// unbound caller manages all, a tenant-bound one only its tenant's.
    pub fn manages(&self, tenant: Option<&str>) -> bool {
        self.tenant().is_none() || tenant == self.tenant()
    }
}

/// A caller that publishes notices: its key, and the tenant it is confined to. The tenant
/// publishing policy: a tenant-bound publisher writes to its own tenant only (the default
/// audience of its notices) and changes only notices of exactly that audience.
pub struct Author<'a> {
    pub key: &'a Versioned<ApiKey>,
    pub tenant: Option<&'a str>,
}

impl Caller {
    /// The caller as the author of notices: 401 or 403 unless it may publish.
    pub fn author(&self) -> Result<Author<'_>, ApiError> {
        Ok(Author {
            key: self.require(Permission::Publish)?,
            tenant: self.tenant(),
        })
    }
}

impl Author<'_> {
    /// What the author may see: its tenant's notices and the public ones, or everything.
    pub fn viewer(&self) -> Viewer {
        match self.tenant {
            Some(tenant) => Viewer::Tenant(tenant.to_owned()),
            None => Viewer::Everyone,
        }
    }

    /// The audience of a new notice: as asked, or for a tenant-bound key exactly its
    /// tenant (the default when none is asked).
    pub fn audience(&self, asked: Option<Audience>) -> Result<Audience, ApiError> {
        let Some(tenant) = self.tenant else {
            return Ok(asked.unwrap_or_default());
        };
        let own = Audience::Tenants {
            tenants: vec![tenant.to_owned()],
        };
        match asked {
            None => Ok(own),
            Some(Audience::Tenants { tenants })
                if tenants.len() == 1 && tenants[0].trim().eq_ignore_ascii_case(tenant) =>
            {
                Ok(own)
            }
            Some(_) => Err(ApiError::Forbidden(format!(
                "a key bound to tenant {tenant} publishes to that tenant only"
            ))),
        }
    }

    /// Refuses a command on a notice this key may not write, given the notice's whole
    /// (unredacted) audience, `None` if there is no such notice: 404 when the key may not
    /// even see it, 403 when it is shared beyond the key's tenant. Audiences never change,
    /// so the check holds for the write that follows.
    pub fn may_write(&self, audience: Option<&Audience>) -> Result<(), ApiError> {
        let audience = audience
            .filter(|a| self.viewer().may_see(a))
            .ok_or_else(|| ApiError::NotFound("no such notice".into()))?;
        let Some(tenant) = self.tenant else {
            return Ok(());
        };
        match audience {
            Audience::Tenants { tenants } if tenants.len() == 1 && tenants[0] == tenant => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "a key bound to tenant {tenant} changes that tenant's notices only"
            ))),
        }
    }
}

/// The secret of `Authorization: Bearer <secret>`; `None` when there is no such header.
fn bearer_secret(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::Unauthorized("Authorization must be: Bearer <API key>".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, secret) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() || secret.len() > MAX_SECRET_LEN
    {
        return Err(malformed());
    }
    Ok(Some(secret.to_owned()))
}

async fn authenticate(request: HttpRequest) -> Result<Caller, ApiError> {
    let secret = bearer_secret(&request);
    let state = request
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("no application state"))?;
    let limits = &state.limits;
    let client_ip = limits.client_address(&request);
    if let Some(ip) = client_ip {
        limits.refuse_blocked_address(ip)?;
    }
    let secret = match secret {
        Ok(None) => {
            return Ok(Caller {
                key: None,
                client_ip,
            })
        }
        Ok(Some(secret)) => secret,
        Err(e) => return Err(limits.failed_authentication(client_ip, e)),
    };
    let hash = projections::access::secret_sha256(&secret);
    match state.live_keys.get(hash).await? {
        Some(key) => Ok(Caller {
            key: Some(key),
            client_ip,
        }),
        None => Err(limits.failed_authentication(
            client_ip,
            ApiError::Unauthorized("unknown or revoked API key".into()),
        )),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(authenticate(request.clone()))
    }
}
