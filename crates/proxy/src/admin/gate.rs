//! Where the admin console is chosen: at startup, before any route, a client asking for
//! the database [`CONSOLE_DATABASE`] on a proxy with `[admin]` is taken for the console
//! and authenticated with `[admin] auth`, whoever it claims to be: a user without a
//! `[[user]]` goes through the same decoy as an unknown user on a route (28P01), so that
//! nobody can learn which names are admins. Only once authenticated is a user not in
//! `[admin] users` refused, with 42501 ([`ProxyHooks::admit_console`]).

use pgbastion_gateway::{ConnectionState, HookResult};

use super::settings::{Admin, CONSOLE_DATABASE};
use crate::admission::ProxyConn;
use crate::config::AuthMode;
use crate::hooks::{require_tls_for_secrets, ProxyHooks};
use crate::metrics::RefusalReason;
use crate::refusal::Refusal;

impl ProxyHooks {
    /// `[admin]`, when `state`'s client asks for the console.
    pub(crate) fn console_for(&self, state: &ConnectionState) -> Option<&Admin> {
        let client = state.client.as_ref()?;
        let admin = self.shared.admin.as_ref()?;
        (client.database() == CONSOLE_DATABASE).then_some(admin)
    }

    /// How a console client authenticates, once it is one.
    pub(crate) fn console_auth(&self, data: &ProxyConn) -> Option<AuthMode> {
        let admin = self.shared.admin.as_ref()?;
        data.console.then_some(admin.auth)
    }

    /// Admits `state`'s client to the console's authentication, or refuses it (TLS only).
    pub(crate) fn start_console(
        &self,
        admin: &Admin,
        state: &ConnectionState,
        data: &mut ProxyConn,
    ) -> HookResult<()> {
        let metrics = &self.shared.lasting.metrics;
        require_tls_for_secrets(admin.auth, admin.insecure, "[admin]", state)
            .inspect_err(|_| metrics.refused(RefusalReason::Tls))?;
        data.attempt = Some(metrics.auth_attempt(admin.auth.name()));
        data.console = true;
        Ok(())
    }
}

impl ProxyHooks {
    /// Whether `state`'s client, authenticated for the console, is one of `[admin] users`;
    /// if not, the refusal it gets (42501, counted as `not_admin`).
    pub(crate) fn admit_console(&self, state: &ConnectionState) -> Result<(), Refusal> {
        let user = state.client.as_ref().map(|c| c.user()).unwrap_or_default();
        if self.shared.admin.as_ref().is_some_and(|a| a.allows(user)) {
            return Ok(());
        }
        self.shared.lasting.metrics.refused(RefusalReason::NotAdmin);
        Err(Refusal::NotAdmin {
            user: user.to_owned(),
        })
    }
}
