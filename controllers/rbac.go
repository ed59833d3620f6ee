package controllers

// The operator checks who scrapes its /metrics (manager's secure metrics):
// it asks the API server to authenticate each token and authorize each
// request.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
