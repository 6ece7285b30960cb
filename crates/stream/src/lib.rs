//! WebSocket event-stream clients (work in progress).
