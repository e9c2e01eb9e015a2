module fraudstack.io/deploy/pause

go 1.24.0
