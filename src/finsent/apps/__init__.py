"""The top layer: the command line, the HTTP server, file prediction, batch scoring, dashboard and exports."""
