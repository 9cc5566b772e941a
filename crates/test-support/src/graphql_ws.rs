//! A graphql-ws client (subprotocol `graphql-transport-ws`) over a real websocket, for the
//! subscription tests. Every wait is bounded by [`MESSAGE_TIMEOUT`], so a server that goes
//! quiet fails the test instead of hanging it.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest wait for one message from the server.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// One graphql-ws connection.
pub struct GraphqlWs {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl GraphqlWs {
    /// Opens a socket to `url` (`ws://host:port/graphql`) asking for `graphql-transport-ws`;
    /// nothing is sent yet.
    ///
    /// # Panics
    /// When the handshake fails.
    pub async fn open(url: &str) -> Self {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("websocket handshake with {url} failed: {e}"));
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "graphql-transport-ws",
            "the server must pick the protocol"
        );
        Self { socket }
    }

    /// Opens a socket and completes the handshake with `{"authorization": "Bearer <token>"}`.
    ///
    /// # Panics
    /// When the server does not acknowledge.
    pub async fn connect(url: &str, token: &str) -> Self {
        let mut client = Self::open(url).await;
        client
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await;
        let ack = client.next_json().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    /// Sends one protocol message.
    ///
    /// # Panics
    /// When the socket is closed.
    pub async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.unwrap();
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// Stops subscription `id` (graphql-ws `complete` from the client).
    pub async fn stop(&mut self, id: &str) {
        self.send(json!({ "id": id, "type": "complete" })).await;
    }

    /// The next text message, as JSON; answers pings.
    ///
    /// # Panics
    /// On a close, an end of the socket, or nothing within [`MESSAGE_TIMEOUT`].
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return message;
                }
                Message::Close(frame) => panic!("the server closed the socket: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next message of subscription `id` (`next`, `error` or `complete`), skipping those
    /// of other subscriptions.
    pub async fn next_of(&mut self, id: &str) -> Value {
        loop {
            let message = self.next_json().await;
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Waits for the server to close the socket and returns its close code and reason.
    ///
    /// # Panics
    /// When a text message comes first, or nothing within [`MESSAGE_TIMEOUT`].
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next_frame().await {
                Message::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
                Message::Close(None) => return (1005, String::new()),
                Message::Text(text) => panic!("expected a close, got {text}"),
                _ => {}
            }
        }
    }

    async fn next_frame(&mut self) -> Message {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message from the server within {MESSAGE_TIMEOUT:?}"))
            .expect("the socket ended")
            .expect("websocket error")
    }
}
