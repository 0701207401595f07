"""gRPC plumbing shared by every service: interceptors and the domain error type."""
