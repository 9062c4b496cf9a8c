//! The server side of SCRAM-SHA-256(-PLUS), as a consuming state machine.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::keys::{self, Key};
use super::messages::{parse_client_first, valid_nonce, Attributes, Gs2Flag};
use super::{
    random_nonce, ScramError, ScramSecret, ServerBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use crate::ct;

const TLS_SERVER_END_POINT: &[u8] = b"tls-server-end-point";

/// A SCRAM exchange waiting for the client-first message (in SASLInitialResponse).
#[derive(Debug)]
pub struct ScramServer {
    secret: ScramSecret,
    binding: ServerBinding,
    nonce: String,
}

/// A SCRAM exchange that sent the server-first message and waits for the client-final one.
#[derive(Debug)]
pub struct ScramServerFirstSent {
    secret: ScramSecret,
    /// The GS2 header the client sent plus our binding data: what `c=` must decode to.
    expected_cbind: Vec<u8>,
    nonce: String,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
}

/// A successful exchange. `Debug` hides the ClientKey.
pub struct ScramSuccess {
    /// The server-final message (`v=...`) to send in AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey, recovered from its proof: with it, a
    /// [`ScramClient`](super::ScramClient) can log into another server holding the same
    /// secret as this user, without the password (see
    /// [`ClientCredential::Keys`](super::ClientCredential::Keys)).
    pub client_key: Key,
}

impl fmt::Debug for ScramSuccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramSuccess { .. }")
    }
}

/// The mechanism the client selected, with our binding data for the PLUS variant.
enum Selected<'a> {
    Plain,
    Plus(&'a [u8]),
}

impl ScramServer {
    /// An exchange against `secret`, with a fresh random server nonce (18 bytes, base64).
    pub fn new(secret: ScramSecret, binding: ServerBinding) -> Self {
        Self::with_nonce(secret, binding, random_nonce())
    }

    /// An exchange with a given server nonce (for replaying recorded exchanges in tests).
    /// It must be printable ASCII without commas, as RFC 5802 requires.
    pub fn with_nonce(secret: ScramSecret, binding: ServerBinding, nonce: String) -> Self {
        Self {
            secret,
            binding,
            nonce,
        }
    }

    /// The mechanisms to advertise in AuthenticationSASL, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self.binding {
            ServerBinding::Offered(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
            ServerBinding::NotOffered => &[SCRAM_SHA_256],
        }
    }

    /// Handles SASLInitialResponse: the selected `mechanism` and the client-first message.
    /// Returns the next state and the server-first message for AuthenticationSASLContinue.
    ///
    /// The user name in the message is ignored (PostgreSQL takes it from the startup
    /// packet; libpq sends `n=`). The mechanism and the GS2 flag must agree as PostgreSQL
    /// checks them.
    pub fn handle_client_first(
        self,
        mechanism: &str,
        client_first: &[u8],
    ) -> Result<(ScramServerFirstSent, Vec<u8>), ScramError> {
        let selected = self.select(mechanism)?;
        let first = parse_client_first(client_first)?;
        let cbind_data = check_gs2_flag(&first.flag, &selected, &self.binding)?;
        let client_nonce = read_client_first_bare(first.bare)?;
        let nonce = format!("{client_nonce}{}", self.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        )
        .into_bytes();
        let state = ScramServerFirstSent {
            expected_cbind: [first.gs2_header, cbind_data].concat(),
            secret: self.secret,
            nonce,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
        };
        Ok((state, server_first))
    }

    fn select(&self, mechanism: &str) -> Result<Selected<'_>, ScramError> {
        match (mechanism, &self.binding) {
            (SCRAM_SHA_256, _) => Ok(Selected::Plain),
            (SCRAM_SHA_256_PLUS, ServerBinding::Offered(data)) => Ok(Selected::Plus(data)),
            (SCRAM_SHA_256_PLUS, ServerBinding::NotOffered) => {
                Err(ScramError::ChannelBindingRequiredButNotOffered)
            }
            (other, _) => Err(ScramError::UnsupportedMechanism(other.to_owned())),
        }
    }
}

/// Checks the GS2 flag against the selected mechanism, in PostgreSQL's order
/// (`read_client_first_message` in `auth-scram.c`); returns the binding data for `c=`.
fn check_gs2_flag<'a>(
    flag: &Gs2Flag<'_>,
    selected: &Selected<'a>,
    binding: &ServerBinding,
) -> Result<&'a [u8], ScramError> {
    match (flag, selected) {
        (Gs2Flag::Used(_), Selected::Plain) => Err(ScramError::Malformed(
            "SCRAM-SHA-256 selected, but the message includes channel binding data",
        )),
        (Gs2Flag::Used(kind), Selected::Plus(_)) if *kind != TLS_SERVER_END_POINT => Err(
            ScramError::UnsupportedChannelBinding(String::from_utf8_lossy(kind).into_owned()),
        ),
        (Gs2Flag::Used(_), Selected::Plus(data)) => Ok(data),
        (Gs2Flag::SupportedNotUsed, _) if matches!(binding, ServerBinding::Offered(_)) => {
            Err(ScramError::DowngradeDetected)
        }
        (Gs2Flag::SupportedNotUsed | Gs2Flag::NotSupported, Selected::Plus(_)) => Err(
            ScramError::Malformed("SCRAM-SHA-256-PLUS selected without channel binding data"),
        ),
        (Gs2Flag::SupportedNotUsed | Gs2Flag::NotSupported, Selected::Plain) => Ok(&[]),
    }
}

/// `[reserved-mext ","] username "," nonce ["," extensions]`: returns the client nonce.
fn read_client_first_bare(bare: &[u8]) -> Result<&str, ScramError> {
    let mut attrs = Attributes::new(bare);
    attrs.refuse_mandatory_extension()?;
    attrs.expect(b'n')?;
    let nonce = attrs.expect(b'r')?;
    attrs.skip_extensions()?;
    if !valid_nonce(nonce) {
        return Err(ScramError::Malformed(
            "client nonce contains invalid characters",
        ));
    }
    std::str::from_utf8(nonce).map_err(|_| ScramError::Malformed("client nonce is not ASCII"))
}

impl ScramServerFirstSent {
    /// Handles the client-final message (in SASLResponse): checks channel binding, nonce
    /// and proof (in constant time). On success, the server-final message goes into
    /// AuthenticationSASLFinal.
    pub fn handle_client_final(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let mut attrs = Attributes::new(client_final);
        let cbind = B64
            .decode(attrs.expect(b'c')?)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if !ct::eq(&cbind, &self.expected_cbind) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if attrs.expect(b'r')? != self.nonce.as_bytes() {
            return Err(ScramError::NonceMismatch);
        }
        let proof = decode_proof(attrs.expect_after_extensions(b'p')?)?;
        attrs.finish()?;
        let auth_message = keys::auth_message(
            &self.client_first_bare,
            &self.server_first,
            attrs.before_last(),
        );
        let signature = keys::client_signature(&self.secret.stored_key, &auth_message);
        let client_key = keys::xor(&proof, &signature);
        if !ct::eq(&keys::sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = keys::server_signature(&self.secret.server_key, &auth_message);
        Ok(ScramSuccess {
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
            client_key,
        })
    }
}

fn decode_proof(proof: &[u8]) -> Result<Key, ScramError> {
    B64.decode(proof)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or(ScramError::Malformed(
            "proof is not 32 base64-encoded bytes",
        ))
}
