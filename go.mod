module github.com/sengo-relay/sengo-relay

go 1.26.8
