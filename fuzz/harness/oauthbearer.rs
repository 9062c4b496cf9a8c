//! Body of the `oauthbearer` fuzz target: the input as the client's initial response of a
//! SASL OAUTHBEARER exchange (and as its error acknowledgement), parsed as the gateway does.
//! A token that parses must come back unchanged from the message libpq would build for it,
//! and must not show in `Debug` output.

use pgbastion_auth::oauthbearer::{
    client_initial_response, parse_error_acknowledgement, parse_initial_response,
    ClientInitialResponse,
};

/// Parses `data` as both OAUTHBEARER client messages.
pub fn fuzz_oauthbearer(data: &[u8]) {
    if let Ok(ClientInitialResponse::Token(token)) = parse_initial_response(data) {
        let text = token.expose();
        assert!(!text.is_empty());
        assert!(
            !format!("{token:?}").contains(text),
            "Debug shows the token"
        );
        let again = parse_initial_response(&client_initial_response(Some(text)));
        assert_eq!(again, Ok(ClientInitialResponse::Token(token)));
    }
    let _ = parse_error_acknowledgement(data);
}
