//! Body of the `oauthbearer` fuzz target: the input as the client's initial response of a
//! SASL OAUTHBEARER exchange (and as its error acknowledgement), parsed as the gateway does.
//! A token that parses must come back unchanged from the message libpq would build for it,
//! and its `Debug` output must not depend on it.

use pgbastion_auth::oauthbearer::{
    client_initial_response, parse_error_acknowledgement, parse_initial_response,
    ClientInitialResponse,
};

/// Parses `data` as both OAUTHBEARER client messages.
pub fn fuzz_oauthbearer(data: &[u8]) {
    if let Ok(ClientInitialResponse::Token(token)) = parse_initial_response(data) {
        let text = token.expose();
        assert!(!text.is_empty());
        // Debug must not depend on the token (a short token can appear in any fixed text).
        let Ok(ClientInitialResponse::Token(other)) =
            parse_initial_response(&client_initial_response(Some("other")))
        else {
            panic!("a fixed token does not parse");
        };
        assert_eq!(
            format!("{token:?}"),
            format!("{other:?}"),
            "Debug shows the token"
        );
        let again = parse_initial_response(&client_initial_response(Some(text)));
        assert_eq!(again, Ok(ClientInitialResponse::Token(token)));
    }
    let _ = parse_error_acknowledgement(data);
}
