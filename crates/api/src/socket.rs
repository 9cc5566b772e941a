//! The graphql-ws endpoint: a websocket on `GET /graphql` that serves subscriptions.
//!
//! Both subprotocols async-graphql speaks are accepted: `graphql-transport-ws` (the current
//! graphql-ws protocol, <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>) and
//! the legacy `graphql-ws` of subscriptions-transport-ws. The client authenticates in its
//! `connection_init` payload, `{"authorization": "Bearer <JWT>"}` (`Authorization` is read too),
//! the same token as over HTTP. With graphql-transport-ws:
//!
//! - no valid token: the socket is closed with `4403 Forbidden`;
//! - no `connection_init` within [`CONNECTION_INIT_TIMEOUT`]: closed with `4408`;
//! - a `subscribe` before the handshake: closed (async-graphql's `1011`);
//! - a refused subscription (`NOT_FOUND`, `TOO_MANY_SUBSCRIPTIONS`, a guard refusal) is a
//!   `next` with the error, then `complete`, for that id only: the socket stays open.
//!
//! Messages are limited like HTTP bodies ([`BODY_LIMIT_BYTES`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::futures_util::{SinkExt as _, StreamExt as _, future};
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket as GraphQLWebSocket, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{Auth, TokenService};
use crate::client_ip::ClientIp;
use crate::guard::OverWebSocket;
use crate::live::ConnectionSubscriptions;
use crate::schema::AppSchema;
use crate::server::BODY_LIMIT_BYTES;

/// How long a socket may stay open without a `connection_init` (graphql-ws: `4408`), so that
/// unauthenticated sockets cannot pile up.
pub const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// graphql-ws: "the server rejected the connection" (no or an invalid token).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// graphql-ws: no `connection_init` in time.
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// The error our `connection_init` handler returns; async-graphql closes with `1002` and this
/// reason, which [`serve`] turns into [`CLOSE_FORBIDDEN`].
const TOKEN_REFUSED: &str =
    "Forbidden: connection_init must carry {\"authorization\": \"Bearer <token>\"} with a valid token";

/// Upgrades a `GET /graphql` that asks for a websocket. A websocket without a GraphQL
/// subprotocol is answered `400`.
pub(crate) fn upgrade(
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
    schema: AppSchema,
    tokens: TokenService,
    client: ClientIp,
) -> Response {
    let Some(protocol) = requested_protocol(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must be graphql-transport-ws (or the legacy graphql-ws)",
        )
            .into_response();
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(BODY_LIMIT_BYTES)
        .max_frame_size(BODY_LIMIT_BYTES)
        .on_upgrade(move |socket| serve(socket, protocol, schema, tokens, client))
}

/// The first GraphQL subprotocol the client offers.
fn requested_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

async fn serve(
    socket: WebSocket,
    protocol: WebSocketProtocols,
    schema: AppSchema,
    tokens: TokenService,
    client: ClientIp,
) {
    let (mut sink, source) = socket.split();
    let input = source
        .take_while(|message| future::ready(message.is_ok()))
        .filter_map(|message| {
            future::ready(match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => Some(message.into_data()),
                _ => None,
            })
        });
    let mut data = Data::default();
    data.insert(client);
    data.insert(OverWebSocket);
    data.insert(Arc::new(ConnectionSubscriptions::default()));
    let initialised = Arc::new(AtomicBool::new(false));
    let replies = GraphQLWebSocket::new(schema, input, protocol)
        .connection_data(data)
        .on_connection_init({
            let initialised = initialised.clone();
            move |payload| connection_init(tokens, payload, initialised)
        })
        .map(|message| match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(1002, reason) if reason == TOKEN_REFUSED => close(CLOSE_FORBIDDEN, "Forbidden"),
            WsMessage::Close(code, reason) => close(code, &reason),
        });
    let mut replies = std::pin::pin!(replies);
    let init_deadline = tokio::time::sleep(CONNECTION_INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);
    loop {
        let message = tokio::select! {
            message = replies.next() => match message {
                Some(message) => message,
                // The client went away: dropping `replies` drops its subscriptions, which
                // gives back their slots and watchers.
                None => return,
            },
            () = &mut init_deadline, if !initialised.load(Ordering::Acquire) => {
                close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")
            }
        };
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            return;
        }
    }
}

/// Reads the token of the `connection_init` payload; its claims become the socket's [`Auth`].
async fn connection_init(
    tokens: TokenService,
    payload: serde_json::Value,
    initialised: Arc<AtomicBool>,
) -> async_graphql::Result<Data> {
    let authorization = ["authorization", "Authorization"]
        .iter()
        .find_map(|key| payload.get(key)?.as_str());
    match tokens.authenticate(authorization) {
        auth @ Auth::User(_) => {
            initialised.store(true, Ordering::Release);
            let mut data = Data::default();
            data.insert(auth);
            Ok(data)
        }
        Auth::Anonymous | Auth::Invalid => Err(async_graphql::Error::new(TOKEN_REFUSED)),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
