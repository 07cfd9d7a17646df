"""The gRPC edge: servicers, proto <-> domain mapping, error translation, the server."""
